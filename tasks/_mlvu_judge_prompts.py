"""DEFAULT MLVU judge prompts — vamba-eval's OWN paraphrase of the MLVU authors' rubrics, NOT their text.

The rubric content (what is scored, on which scale, the final dict's keys) follows the authors'
``evaluate_ssc.py`` / ``evaluate_summary.py`` so the judge's scores mean the same thing and
``calculate.py``'s parser reads them; the wording is ours. To send the authors' exact text, put it
in ``<folder>/mlvu/{sub_scene,summary}_{system,user}.txt`` and point the run config's ``judge_prompts`` or
``$VAMBA_EVAL_JUDGE_PROMPTS`` at ``<folder>`` (see tasks/mlvu_gen.py). User templates use the
placeholders {question} {scoring_points} {answer} {pred}, replaced literally.
"""

from __future__ import annotations

PARAPHRASE_LABEL = "vamba-eval paraphrase of the MLVU judge rubric (not the MLVU authors' text)"

_DICT_RULE = (
    "Finish your reply with a single dict written exactly in this form: {form} — each key in single "
    "quotes, then a colon, ONE space and the number, then a comma."
)

_SUB_SCENE_SYSTEM = """You are grading a free-text answer about one scene of a video.
You receive the question, a list of scoring points (facts a good answer contains) and the answer to grade.
Return two scores.

Accuracy, 1 to 5. Grade every scoring point separately: 5 when the answer states it correctly, 3 when the
answer touches it but gets part of it wrong, 1 when the answer leaves it out. The accuracy score is the
mean of these per-point grades.

Relevance, 1 to 5, judged without regard to correctness:
5 - only about what was asked, stated with confidence;
4 - mostly about what was asked, stated with confidence;
3 - about what was asked, but hedged or unsure;
2 - partly about what was asked, with a lot of unrelated material;
1 - not about what was asked.

Briefly justify each score before giving it. """ + _DICT_RULE.format(
    form="{'score_accuracy': A, 'score_relevance': R, 'total_score': T} with T = A + R"
)

_SUB_SCENE_USER = """Grade the answer below as instructed and end with the score dict.
Question: {question}
Scoring points: {scoring_points}
Answer to grade: {pred}"""

_SUMMARY_SYSTEM = """You are grading a summary of a video against a reference summary of the same video.
Return two integer scores.

Completeness, 1 to 5: how much of the reference's main content and key points the summary covers -
1 almost none, 2 some but many are missing, 3 most of them, 4 nearly all, 5 all of them.

Reliability, 1 to 5: whether what the summary says is right and clearly put -
1 many factual errors or contradictions and hard to follow; 2 several errors or some contradictions;
3 mostly right with small slips; 4 right apart from negligible slips, no contradictions, clear;
5 entirely right, no contradictions, clear. Plausible details that the reference lacks but does not
contradict cost nothing.

Briefly justify each score before giving it. """ + _DICT_RULE.format(
    form="{'score_completeness': C, 'score_reliability': R, 'total_score': T} with T = C + R"
)

_SUMMARY_USER = """Grade the summary below as instructed and end with the score dict.
Reference summary: {answer}
Summary to grade: {pred}"""

#: label → (system, user template)
PARAPHRASE: dict[str, tuple[str, str]] = {
    "sub_scene": (_SUB_SCENE_SYSTEM, _SUB_SCENE_USER),
    "summary": (_SUMMARY_SYSTEM, _SUMMARY_USER),
}
