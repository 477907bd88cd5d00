"""The classifier's answers as protobuf messages: built from plain values, the same message as field by field."""

from __future__ import annotations

import numpy as np

from fashionsearch.classification import AttributePrediction, Classification, LabelScore
from fashionsearch.errors import InvalidArgument, item_error_fields
from fashionsearch.v1 import classifier_pb2, common_pb2
from services.classifier.servicer import classification_fields

RESULT = Classification.of(
    (
        AttributePrediction("baseColour", (LabelScore("Navy Blue", 0.75), LabelScore("Blue", 0.125))),
        AttributePrediction("gender", (LabelScore("Men", 1.0),)),
        AttributePrediction("articleType", (LabelScore("Shirts", 0.5),)),
    )
)


def field_by_field(vector: list[float]) -> classifier_pb2.Classification:
    return classifier_pb2.Classification(
        embedding=vector,
        attributes=[
            common_pb2.AttributePrediction(
                attribute=a.attribute,
                labels=[common_pb2.LabelScore(label=s.label, probability=s.probability) for s in a.labels],
            )
            for a in RESULT.attributes
        ],
        suggested_name=RESULT.suggested_name,
        keywords=list(RESULT.keywords),
    )


def test_classification_fields_make_the_same_message():
    vector = np.array([0.5, -0.25, 0.1], dtype=np.float32)
    with_vector = classifier_pb2.Classification(**classification_fields(RESULT, vector))
    assert with_vector == field_by_field(vector.tolist())
    assert classifier_pb2.Classification(**classification_fields(RESULT)) == field_by_field([])
    assert RESULT.suggested_name and list(with_vector.keywords) == list(RESULT.keywords)


def test_a_batch_reply_from_plain_values_holds_results_and_errors_in_order():
    bad = InvalidArgument("image is empty (0 bytes)")
    reply = classifier_pb2.ClassifyBatchResponse(
        results=[{"classification": classification_fields(RESULT)}, {"error": item_error_fields(bad)}]
    )
    assert [r.WhichOneof("outcome") for r in reply.results] == ["classification", "error"]
    assert reply.results[0].classification == field_by_field([])
    assert reply.results[1].error == common_pb2.ItemError(**item_error_fields(bad))
