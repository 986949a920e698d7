"""The NER/RE answer formats: gold completions, robust parsing of malformed answers, and round trips on real data."""

from __future__ import annotations

import gzip

import pytest

from fedmedlora.scoring.output_format import (
    NONE_ANSWER,
    entity_format_instructions,
    format_entities,
    format_relations,
    parse_entities,
    parse_relations,
    relation_format_instructions,
    tokenize_mention,
)
from fedmedlora.scoring.relations import Relation, score_relations
from fedmedlora.scoring.spans import Span, bio_to_spans
from fedmedlora.data.conll import read_conll
from fedmedlora_data import data_path

C, D = "Chemical", "Disease"
TYPES = [C, D]
TOKENS = (
    "Famotidine - associated delirium and heart failure in patients given famotidine with congestive heart failure ."
).split()
GOLD = [Span(0, 1, C), Span(3, 4, D), Span(5, 7, D), Span(10, 11, C), Span(12, 15, D)]


def parse(text: str):
    return parse_entities(text, TOKENS, TYPES)


# --- NER: writing --------------------------------------------------------------------------------------------------


def test_format_entities_lists_mentions_in_order_of_appearance_once_per_occurrence():
    assert format_entities(TOKENS, list(reversed(GOLD))) == (
        "Chemical: Famotidine\n"
        "Disease: delirium\n"
        "Disease: heart failure\n"
        "Chemical: famotidine\n"
        "Disease: congestive heart failure"
    )


def test_format_entities_answers_none_when_there_is_no_entity():
    assert format_entities(TOKENS, []) == NONE_ANSWER == "none"


def test_format_entities_rejects_spans_outside_the_tokens():
    with pytest.raises(ValueError, match="past"):
        format_entities(TOKENS[:3], [Span(2, 5, D)])


def test_instructions_name_the_types_and_the_none_answer():
    text = entity_format_instructions(TYPES)
    assert "Chemical, Disease" in text and "'none'" in text
    assert "CID" in relation_format_instructions(["CID"])


def test_tokenize_mention_splits_punctuation_like_conll():
    assert tokenize_mention("T-cell leukaemia (A-T).") == ["T", "-", "cell", "leukaemia", "(", "A", "-", "T", ")", "."]


# --- NER: parsing ----------------------------------------------------------------------------------------------------


def test_parse_inverts_format():
    parsed = parse(format_entities(TOKENS, GOLD))
    assert parsed.spans == GOLD
    assert (parsed.unparseable, parsed.dropped_lines, parsed.reasons) == (False, 0, [])


@pytest.mark.parametrize(
    "line",
    [
        "- Disease: delirium",
        "* Disease: delirium",
        "1. Disease: delirium",
        "2) Disease: delirium",
        '"Disease: delirium"',
        "Disease: 'delirium'",
        "Disease: “delirium”",
        "Disease: `delirium`",
        "**Disease**: delirium",
        "   Disease  :    delirium   ",
        "Disease: delirium.",
        "Disease: delirium ;",
        "DISEASE: delirium",
        "disease: Delirium",
        "Entities: Disease: delirium",
        "```Disease: delirium```",
    ],
)
def test_parse_tolerates_decorations_around_a_line(line):
    parsed = parse(line)
    assert parsed.spans == [Span(3, 4, D)], parsed.reasons
    assert (parsed.unparseable, parsed.dropped_lines) == (False, 0)


def test_parse_keeps_mentions_spread_over_extra_spaces_and_hyphenation():
    assert parse("Disease:   congestive   heart failure").spans == [Span(12, 15, D)]
    tokens = "Clustering in the ataxia - telangiectasia gene".split()
    assert parse_entities("Disease: ataxia-telangiectasia", tokens, TYPES).spans == [Span(3, 6, D)]


def test_parse_falls_back_to_text_without_spaces_when_tokenisations_differ():
    tokens = ["Inhibition", "of", "Na+/K+", "ATPase", "by", "ouabain"]
    assert parse_entities("Chemical: Na+/K+ ATPase", tokens, TYPES).spans == [Span(2, 4, C)]
    assert parse_entities("Chemical: Na + / K + ATPase", tokens, TYPES).spans == [Span(2, 4, C)]
    assert parse_entities("Chemical: Na+/K+ATPase", tokens, TYPES).spans == [Span(2, 4, C)]


def test_parse_skips_code_fences_and_counts_stray_lines():
    text = "Here are the entities:\n```text\nEntities:\nChemical: famotidine\nDisease: delirium\n```\nHope this helps!"
    parsed = parse(text)
    assert parsed.spans == [Span(0, 1, C), Span(3, 4, D)]
    assert not parsed.unparseable
    assert parsed.dropped_lines == 3  # the two header lines and the closing remark; the fences are not lines
    assert len(parsed.reasons) == 3


def test_parse_counts_an_echoed_prompt_as_an_unknown_type():
    parsed = parse("Sentence: Famotidine - associated delirium\nDisease: delirium")
    assert parsed.spans == [Span(3, 4, D)]
    assert parsed.dropped_lines == 1 and "unknown type 'Sentence'" in parsed.reasons[0]


def test_parse_drops_an_unfinished_last_line_and_keeps_the_rest():
    truncated_mention = parse("Chemical: Famotidine\nDisease: delir")
    assert truncated_mention.spans == [Span(0, 1, C)]
    assert truncated_mention.dropped_lines == 1 and "not in the sentence" in truncated_mention.reasons[0]

    truncated_type = parse("Chemical: Famotidine\nDise")
    assert truncated_type.spans == [Span(0, 1, C)] and truncated_type.dropped_lines == 1

    truncated_after_colon = parse("Chemical: Famotidine\nDisease:")
    assert truncated_after_colon.spans == [Span(0, 1, C)] and truncated_after_colon.dropped_lines == 1


@pytest.mark.parametrize("text", ["", "   ", "\n\n \t\n"])
def test_empty_output_means_no_entities_but_is_not_unparseable(text):
    parsed = parse(text)
    assert (parsed.spans, parsed.unparseable, parsed.dropped_lines) == ([], False, 0)
    assert parsed.reasons == ["empty output"]


@pytest.mark.parametrize("text", ["none", "None.", "NONE", "No entities found.", "```\nnone\n```", "Disease: none"])
def test_none_answers_mean_no_entities(text):
    parsed = parse(text)
    assert (parsed.spans, parsed.unparseable, parsed.dropped_lines) == ([], False, 0)


@pytest.mark.parametrize("text", ["asdf qwerty", "The sentence mentions famotidine.", "Entities:", "::::"])
def test_garbage_is_unparseable_and_counts_as_no_entities(text):
    parsed = parse(text)
    assert parsed.spans == [] and parsed.unparseable
    assert parsed.dropped_lines == 1 and parsed.reasons[-1] == "no recognisable line"


def test_a_mention_absent_from_the_sentence_is_dropped_and_counted():
    parsed = parse("Disease: delirium\nDisease: hepatitis")
    assert parsed.spans == [Span(3, 4, D)]
    assert parsed.dropped_lines == 1 and "'hepatitis'" in parsed.reasons[0]
    assert not parsed.unparseable


def test_a_well_formed_line_is_recognised_even_when_its_mention_is_absent():
    parsed = parse("Disease: hepatitis")
    assert parsed.spans == [] and not parsed.unparseable and parsed.dropped_lines == 1


def test_an_unknown_type_is_dropped_and_counted():
    parsed = parse("Drug: famotidine\nDisease: delirium")
    assert parsed.spans == [Span(3, 4, D)]
    assert parsed.dropped_lines == 1 and "unknown type 'Drug'" in parsed.reasons[0]


def test_repeated_lines_take_successive_occurrences_and_extra_repeats_are_dropped():
    assert parse("Chemical: famotidine\nChemical: famotidine").spans == [Span(0, 1, C), Span(10, 11, C)]
    parsed = parse("Chemical: famotidine\nChemical: famotidine\nChemical: famotidine")
    assert parsed.spans == [Span(0, 1, C), Span(10, 11, C)] and parsed.dropped_lines == 1


def test_the_same_occurrence_may_carry_two_types():
    assert parse("Chemical: delirium\nDisease: delirium").spans == [Span(3, 4, C), Span(3, 4, D)]


def test_a_mention_inside_an_earlier_listed_mention_goes_to_its_own_occurrence():
    tokens = "congestive heart failure and later heart failure".split()
    gold = [Span(0, 3, D), Span(5, 7, D)]
    assert parse_entities(format_entities(tokens, gold), tokens, TYPES).spans == gold


def test_lines_in_order_of_appearance_pick_occurrences_after_the_previous_one():
    tokens = "DM patients : myotonic dystrophy ( DM ) is common".split()
    gold = [Span(3, 5, D), Span(6, 7, D)]
    assert parse_entities("Disease: myotonic dystrophy\nDisease: DM", tokens, TYPES).spans == gold


def test_a_comma_separated_list_on_one_line_gives_each_mention():
    parsed = parse("Disease: delirium, congestive heart failure")
    assert parsed.spans == [Span(3, 4, D), Span(12, 15, D)] and parsed.dropped_lines == 0


def test_parse_entities_rejects_bad_types():
    with pytest.raises(ValueError, match="empty"):
        parse_entities("Disease: delirium", TOKENS, [])
    with pytest.raises(TypeError):
        parse_entities("Disease: delirium", TOKENS, "Disease")
    with pytest.raises(ValueError, match="case"):
        parse_entities("Disease: delirium", TOKENS, ["Disease", "disease"])


@pytest.mark.parametrize("corpus,types", [("ncbi_disease", [D]), ("bc5cdr", [C, D])])
def test_round_trip_on_the_first_200_test_sentences(corpus, types):
    sentences = read_conll(data_path("ner", corpus, "test.tsv.gz"))[:200]
    entities = 0
    for tokens, tags in sentences:
        gold = bio_to_spans(tags)
        entities += len(gold)
        parsed = parse_entities(format_entities(tokens, gold), tokens, types)
        assert parsed.spans == gold, (" ".join(tokens), parsed.reasons)
        assert not parsed.unparseable and parsed.dropped_lines == 0
    assert entities > 150


# --- RE: writing ---------------------------------------------------------------------------------------------------

RELATION_TYPES = ["CID", "INHIBITOR"]


def test_format_relations_writes_concepts_in_the_given_order():
    relations = [Relation("famotidine", "delirium", "CID"), Relation("dobutamine", "heart  failure", "CID")]
    assert format_relations(relations) == "famotidine | CID | delirium\ndobutamine | CID | heart failure"
    assert format_relations([]) == "none"


def test_format_relations_writes_mentions_in_order_of_appearance_from_the_tokens():
    relations = [
        Relation(Span(10, 11, C), Span(12, 15, D), "CID"),
        Relation(Span(0, 1, C), Span(3, 4, D), "CID"),
    ]
    assert format_relations(relations, TOKENS) == (
        "Famotidine | CID | delirium\nfamotidine | CID | congestive heart failure"
    )
    with pytest.raises(ValueError, match="tokens"):
        format_relations(relations)


def test_format_relations_refuses_what_the_format_cannot_hold():
    with pytest.raises(ValueError, match="one"):
        format_relations([Relation("a|b", "c", "CID")])
    with pytest.raises(ValueError, match="mention-level"):
        format_relations([Relation("a", "c", "CID"), Relation(Span(0, 1, C), Span(1, 2, D), "CID")], TOKENS)


# --- RE: parsing -----------------------------------------------------------------------------------------------------


def parse_re(text: str):
    return parse_relations(text, RELATION_TYPES)


FAMOTIDINE_DELIRIUM = Relation("famotidine", "delirium", "CID")


@pytest.mark.parametrize(
    "line",
    [
        "famotidine | CID | delirium",
        "famotidine|CID|delirium",
        "  famotidine   |  cid |   delirium  ",
        "- famotidine | CID | delirium",
        "1. famotidine | CID | delirium",
        '"famotidine" | "CID" | "delirium"',
        "famotidine | CID | delirium.",
        "| famotidine | CID | delirium |",
        "```famotidine | CID | delirium```",
    ],
)
def test_parse_relations_tolerates_decorations_around_a_line(line):
    parsed = parse_re(line)
    assert parsed.relations == [FAMOTIDINE_DELIRIUM], parsed.reasons
    assert (parsed.unparseable, parsed.dropped_lines) == (False, 0)


def test_parse_relations_canonicalises_the_relation_type():
    assert parse_re("tamoxifen | inhibitor | ER").relations == [Relation("tamoxifen", "ER", "INHIBITOR")]


def test_parse_relations_skips_fences_and_table_rules_and_counts_stray_lines():
    text = (
        "Relations found:\n```\n| head | type | tail |\n|---|---|---|\n"
        "| famotidine | CID | delirium |\n```\nThat is all."
    )
    parsed = parse_re(text)
    assert parsed.relations == [FAMOTIDINE_DELIRIUM]
    # "Relations found:", the table header (an unknown type "type") and "That is all." are dropped.
    assert parsed.dropped_lines == 3 and not parsed.unparseable


def test_parse_relations_drops_a_truncated_last_line():
    parsed = parse_re("famotidine | CID | delirium\ndobutamine | CI")
    assert parsed.relations == [FAMOTIDINE_DELIRIUM] and parsed.dropped_lines == 1


def test_parse_relations_counts_unknown_types_and_empty_arguments():
    parsed = parse_re("famotidine | causes | delirium\n | CID | delirium\nfamotidine | CID | delirium")
    assert parsed.relations == [FAMOTIDINE_DELIRIUM]
    assert parsed.dropped_lines == 2
    assert "unknown relation type 'causes'" in parsed.reasons[0] and "empty" in parsed.reasons[1]


def test_parse_relations_keeps_repeated_lines_which_scoring_counts_once():
    parsed = parse_re("famotidine | CID | delirium\nFamotidine | CID | delirium")
    assert len(parsed.relations) == 2
    assert score_relations([[FAMOTIDINE_DELIRIUM]], [parsed.relations]).strict.fp == 0


@pytest.mark.parametrize("text", ["", "  \n "])
def test_parse_relations_empty_output(text):
    parsed = parse_re(text)
    assert (parsed.relations, parsed.unparseable, parsed.reasons) == ([], False, ["empty output"])


@pytest.mark.parametrize("text", ["none", "None.", "No relations.", "NONE"])
def test_parse_relations_none(text):
    parsed = parse_re(text)
    assert (parsed.relations, parsed.unparseable, parsed.dropped_lines) == ([], False, 0)


@pytest.mark.parametrize("text", ["lorem ipsum", "famotidine causes delirium", "a | b", "| | |"])
def test_parse_relations_garbage_is_unparseable(text):
    parsed = parse_re(text)
    assert parsed.relations == [] and parsed.unparseable and parsed.dropped_lines == 1


def read_pubtator_cid(path, limit: int) -> list[list[Relation]]:
    """CID relations of the first ``limit`` documents, named by each MeSH id's first mention in the document."""
    documents: list[list[Relation]] = []
    names: dict[str, str] = {}
    relations: list[tuple[str, str]] = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= 6:
                for mesh_id in fields[5].split("|"):
                    names.setdefault(mesh_id, fields[3])
            elif len(fields) == 4 and fields[1] == "CID":
                relations.append((fields[2], fields[3]))
            elif not line.strip() and (names or relations):
                documents.append([Relation(names[c], names[d], "CID") for c, d in relations])
                names, relations = {}, []
                if len(documents) == limit:
                    break
    return documents


def test_relations_round_trip_on_bc5cdr_test_documents():
    documents = read_pubtator_cid(data_path("re", "bc5cdr_cid", "CDR_TestSet.PubTator.txt.gz"), 100)
    assert sum(map(len, documents)) > 150
    parsed = [parse_relations(format_relations(relations), ["CID"]) for relations in documents]
    assert [p.relations for p in parsed] == documents
    assert not any(p.unparseable or p.dropped_lines for p in parsed)
    assert score_relations(documents, [p.relations for p in parsed]).flat()["typed-strict-micro-f1"] == 1.0
