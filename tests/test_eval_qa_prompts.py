"""Prompts and answer extraction follow FlowerTune's medical eval (benchmarks.py / utils.py of
flwr benchmarks/flowertune-llm/evaluation/medical), written out here independently of our implementation."""

from __future__ import annotations

import pytest

from fedmedlora.scoring.qa_answers import answer_letter, extract_answer
from fedmedlora.data.qa_benchmarks import QAItem, load_qa_dataset
from fedmedlora.data.qa_prompts import PROTOCOLS

PUBMEDQA_INSTRUCTION = ("As an expert doctor in clinical science and medical knowledge, can you tell me if the "
                        "following statement is correct? Answer yes, no, or maybe.")


def flowertune_prompt(instruction: str, question_block: str) -> str:
    return (f"<|im_start|>question\n{instruction}\n{question_block}\nThe answer is:\n<|im_end|>\n"
            f"<|im_start|>answer\n")


def test_pubmedqa_prompt_is_instruction_context_question_without_options():
    item = load_qa_dataset("pubmedqa").items[0]
    prompt = PROTOCOLS["pubmedqa"].prompt(item)
    assert prompt == flowertune_prompt(PUBMEDQA_INSTRUCTION, f"{item.context}\n{item.question}")
    assert "Options:" not in prompt
    assert [PROTOCOLS["pubmedqa"].answer_text(item, letter) for letter in "ABC"] == ["yes", "no", "maybe"]


def test_medqa_prompt_lists_lettered_options_after_the_question():
    item = load_qa_dataset("medqa").items[0]
    assert item.question.endswith("?")
    prompt = PROTOCOLS["medqa"].prompt(item)
    block = (f"Question: {item.question}\n\nOptions:\nA. {item.options['A']}\nB. {item.options['B']}\n"
             f"C. {item.options['C']}\nD. {item.options['D']}")
    assert prompt.endswith(f"\n{block}\nThe answer is:\n<|im_end|>\n<|im_start|>answer\n")
    assert "select one correct answer from A to E." in prompt  # FlowerTune's MedQA wording, kept verbatim
    assert PROTOCOLS["medqa"].answer_text(item, "C") == "C"


def test_question_mark_is_appended_unless_the_question_ends_with_one_or_a_period():
    medmcqa = load_qa_dataset("medmcqa").items[0]
    assert medmcqa.question.endswith(":")
    assert f"Question: {medmcqa.question}?\n\nOptions:\nA. " in PROTOCOLS["medmcqa"].prompt(medmcqa)
    for question, shown in [("Why", "Why?"), ("Why?", "Why?"), ("Pick one.", "Pick one.")]:
        item = QAItem("x", question, {"A": "a", "B": "b", "C": "c"}, "A")
        assert f"Question: {shown}\n\nOptions:\nA. a\nB. b\nC. c\nThe answer is:" in PROTOCOLS["generic"].prompt(item)


def test_careqa_prompt_is_medmcqas_instruction_and_the_lettered_options():
    """The leaderboard's CareQA recipe, written out by hand: MedMCQA's instruction, "Question: <stem>?" (the stem ends
    with ":" here, so a "?" is appended), the options A-D, "The answer is:", in the question/answer wrapper."""
    item = load_qa_dataset("careqa").items[0]
    assert item.question == ("In relation to iron metabolism and its control mediated by hepcidin, it is true "
                             "that:")
    expected = (
        "<|im_start|>question\n"
        "You are a medical doctor answering realworld medical entrance exam questions. Based on your understanding "
        "of basic and clinical science, medical knowledge, and mechanisms underlying health, disease, patient care, "
        "and modes of therapy, answer the following multiple-choice question. Select one correct answer from A to D. "
        "Base your answer on the current and standard practices referenced in medical guidelines.\n"
        "Question: In relation to iron metabolism and its control mediated by hepcidin, it is true that:?\n\n"
        "Options:\n"
        "A. The drop in partial oxygen pressure promotes the activation of the hypoxia-inducible factor (HIF), which "
        "increases the expression of hepcidin.\n"
        "B. The increase in serum iron or inflammation stimulates the synthesis of hepcidin in the liver, which "
        "negatively regulates the function of ferroportin.\n"
        "C. Hepcidin reduces intestinal iron absorption through the inactivation of the divalent metal transporter 1 "
        "(DMT1).\n"
        "D. In hereditary hemochromatosis type 1, mutations in the human hemochromatosis protein (HFE) cause an "
        "increase in the production of hepcidin.\n"
        "The answer is:\n<|im_end|>\n<|im_start|>answer\n"
    )
    assert PROTOCOLS["careqa"].prompt(item) == expected
    assert item.gold == "B" and PROTOCOLS["careqa"].answer_text(item, "B") == "B"


def test_generic_instruction_names_the_last_option_letter():
    item = QAItem("x", "Q?", {letter: letter.lower() for letter in "ABCDEF"}, "F")
    assert "Select one correct answer from A to F." in PROTOCOLS["generic"].prompt(item)


@pytest.mark.parametrize("generation, expected", [
    ("B", "b"),
    ("b", "b"),
    (" C.", "c"),
    ("(A)", "a"),
    ("**D** because", "d"),
    ("A. Lupus", "a"),
    ("E", "e"),  # accepted by FlowerTune even where there are only four options; it then scores as wrong
    ("The answer is C", "the answer is c"),  # first character "t" is no answer: the whole text is kept
    ("", ""),
    ("\n\n", "\n\n"),
    ("...", "..."),
    ("ÄB", "b"),  # non-ASCII becomes a space before the first character is taken
    ("12", "12"),
    ("notes\n## C\nmore", "c"),  # the line after a "\n##" marker is what counts
])
def test_multiple_choice_extraction(generation, expected):
    assert extract_answer(generation, "mcq") == expected


@pytest.mark.parametrize("generation, expected", [
    ("yes", "yes"),
    ("Yes.", "yes"),
    (" NO", "no"),
    ("yesyes", "yes"),
    ("yesno", "yes"),
    ("noyes", "no"),
    ("nono", "no"),
    ("maybe", "maybe"),  # not in FlowerTune's accepted list: the raw text is compared, and matches
    ("Maybe", "maybe"),
    ("maybe.", "maybe."),  # ... so punctuation makes "maybe" wrong, as on the leaderboard
    ("yes, because", "yes, because"),
    ("a", "a"),
    ("", ""),
])
def test_yes_no_maybe_extraction(generation, expected):
    assert extract_answer(generation, "boolean") == expected


def test_extra_letters_widen_the_accepted_set_for_long_option_lists():
    assert extract_answer("F", "mcq") == "f"  # falls back to the whole text, which happens to be "f"
    assert extract_answer("F) x", "mcq") == "f) x"
    assert extract_answer("F) x", "mcq", extra_letters="ABCDEF") == "f"


def test_answer_letter_maps_extracted_text_to_an_option():
    letters = {"A": "A", "B": "B", "C": "C", "D": "D"}
    assert answer_letter("c", letters) == "C"
    assert answer_letter("e", letters) is None
    assert answer_letter("the answer is c", letters) is None
    words = {"A": "yes", "B": "no", "C": "maybe"}
    assert answer_letter("maybe", words) == "C"
    assert answer_letter("maybe.", words) is None
    assert answer_letter("a", words) is None


def test_unknown_answer_type_is_an_error():
    with pytest.raises(ValueError, match="answer_type"):
        extract_answer("A", "letters")
