"""FlowerTune's medical QA prompts, reproduced so our accuracies compare with its leaderboard.

Protocol (flwr `benchmarks/flowertune-llm/evaluation/medical`, whose instructions come from Meditron's eval):

    body   = "<instruction>\\n<question block>\\nThe answer is:\\n"
    prompt = "<|im_start|>question\\n<body><|im_end|>\\n<|im_start|>answer\\n"

The question block is, for multiple choice, "Question: <question>\\n\\nOptions:\\nA. ...\\nB. ..." (a question that
ends in neither "?" nor "." gets a "?"); for PubMedQA it is the abstract sections joined by newlines, a newline and
the question, with no options listed: the model is asked to answer yes, no or maybe, so the expected answer text is
the option *word*, while for multiple choice it is the option *letter*. The wrapper is plain text, not a chat
template: the tokenizer sees "<|im_start|>" as ordinary characters unless it happens to know the token.
"""

from __future__ import annotations

from dataclasses import dataclass

from .qa_benchmarks import QAItem

# Verbatim from FlowerTune (MedQA's says "A to E" although the test set has 4 options: kept for comparability).
FLOWERTUNE_INSTRUCTIONS = {
    "pubmedqa": (
        "As an expert doctor in clinical science and medical knowledge, can you tell me if the following statement "
        "is correct? Answer yes, no, or maybe."
    ),
    "medqa": (
        "You are a medical doctor taking the US Medical Licensing Examination. You need to demonstrate your "
        "understanding of basic and clinical science, medical knowledge, and mechanisms underlying health, disease, "
        "patient care, and modes of therapy. Show your ability to apply the knowledge essential for medical practice. "
        "For the following multiple-choice question, select one correct answer from A to E. Base your answer on the "
        "current and standard practices referenced in medical guidelines."
    ),
    "medmcqa": (
        "You are a medical doctor answering realworld medical entrance exam questions. Based on your understanding "
        "of basic and clinical science, medical knowledge, and mechanisms underlying health, disease, patient care, "
        "and modes of therapy, answer the following multiple-choice question. Select one correct answer from A to D. "
        "Base your answer on the current and standard practices referenced in medical guidelines."
    ),
}
# FlowerTune gives CareQA (four options, A to D) MedMCQA's instruction, word for word.
FLOWERTUNE_INSTRUCTIONS["careqa"] = FLOWERTUNE_INSTRUCTIONS["medmcqa"]

# Ours, for user JSONL files: MedMCQA's wording with the item's own last letter.
GENERIC_INSTRUCTION = (
    "You are a medical doctor answering real-world medical exam questions. Based on your understanding of basic and "
    "clinical science, medical knowledge, and mechanisms underlying health, disease, patient care, and modes of "
    "therapy, answer the following multiple-choice question. Select one correct answer from A to {last}. Base your "
    "answer on the current and standard practices referenced in medical guidelines."
)

PROMPT_WRAPPER = "<|im_start|>question\n{body}<|im_end|>\n<|im_start|>answer\n"
ANSWER_LEAD_IN = "<|im_start|>answer\n"  # the text every prompt ends with, right before the answer


@dataclass(frozen=True)
class QAProtocol:
    name: str
    answer_type: str  # FlowerTune's name for the extraction rule: "boolean" (yes/no/maybe) or "mcq" (a letter)

    def instruction(self, item: QAItem) -> str:
        if self.name in FLOWERTUNE_INSTRUCTIONS:
            return FLOWERTUNE_INSTRUCTIONS[self.name]
        return GENERIC_INSTRUCTION.format(last=list(item.options)[-1])

    def question_block(self, item: QAItem) -> str:
        if self.answer_type == "boolean":
            return f"{item.context}\n{item.question}" if item.context else item.question
        return format_multiple_choice(item.question, list(item.options.values()))

    def prompt(self, item: QAItem) -> str:
        """The exact text the model is given for `item`."""
        return wrap(f"{self.instruction(item)}\n{self.question_block(item)}\nThe answer is:\n")

    def answer_text(self, item: QAItem, letter: str) -> str:
        """What a correct model writes for option `letter`: the word for PubMedQA, the letter otherwise."""
        return item.options[letter] if self.answer_type == "boolean" else letter


PROTOCOLS = {
    "pubmedqa": QAProtocol("pubmedqa", "boolean"),
    "medqa": QAProtocol("medqa", "mcq"),
    "medmcqa": QAProtocol("medmcqa", "mcq"),
    "careqa": QAProtocol("careqa", "mcq"),
    "generic": QAProtocol("generic", "mcq"),
}


def wrap(body: str) -> str:
    """FlowerTune's question/answer wrapper around a prompt body: the one place it is written, for the benchmarks'
    prompts and for training rows that must look like them (data/instruct.py)."""
    return PROMPT_WRAPPER.format(body=body)


def format_multiple_choice(question: str, options: list[str]) -> str:
    if not question.endswith(("?", ".")):
        question += "?"
    listed = "\n".join(f"{chr(ord('A') + i)}. {text}" for i, text in enumerate(options))
    return f"Question: {question}\n\nOptions:\n{listed}"
