"""TypeSpec: the type of a port, from Python types or JSON Schema, and producer/consumer checks."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel

from flowroute.errors import OutputValidationError
from flowroute.graph.types import ANY, TypeSpec, schema_compatible


class Inner(BaseModel):
    x: int


class Outer(BaseModel):
    name: str
    inner: Inner
    tags: list[str] = []


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Point:
    x: int
    y: int


def spec(schema: dict[str, Any]) -> TypeSpec:
    return TypeSpec.from_schema(schema)


# -- TypeSpec.of ---------------------------------------------------------------------------------


class TestOf:
    def test_builtin_types_get_their_json_schema_and_keep_the_python_type(self) -> None:
        t = TypeSpec.of(int)
        assert t.schema == {"type": "integer"}
        assert t.python_type is int
        assert t.name == "int"

    def test_literal_becomes_a_string_enum(self) -> None:
        t = TypeSpec.of(Literal["refund", "question"])
        assert t.schema == {"type": "string", "enum": ["refund", "question"]}

    def test_enum_class_becomes_an_enum_of_its_values(self) -> None:
        assert TypeSpec.of(Color).schema["enum"] == ["red", "blue"]

    def test_pydantic_model_schema_keeps_nested_definitions(self) -> None:
        t = TypeSpec.of(Outer)
        assert t.schema["properties"]["inner"] == {"$ref": "#/$defs/Inner"}
        assert "Inner" in t.schema["$defs"]
        assert t.name == "Outer"

    def test_dataclass_is_an_object_with_its_fields(self) -> None:
        t = TypeSpec.of(Point)
        assert t.schema["type"] == "object"
        assert set(t.schema["properties"]) == {"x", "y"}

    @pytest.mark.parametrize("tp", [Any, None])
    def test_any_and_none_are_the_untyped_port(self, tp: Any) -> None:
        assert TypeSpec.of(tp) is ANY
        assert ANY.schema == {}
        assert ANY.name == "any"


# -- TypeSpec.from_schema ------------------------------------------------------------------------


class TestFromSchema:
    def test_keeps_the_schema_and_has_no_python_type(self) -> None:
        t = spec({"type": "array", "items": {"type": "string"}})
        assert t.python_type is None
        assert t.name == "array of string"

    def test_an_invalid_schema_is_rejected_up_front(self) -> None:
        with pytest.raises(jsonschema.SchemaError):
            TypeSpec.from_schema({"type": "strng"})

    def test_name_describes_enums_and_type_unions(self) -> None:
        assert spec({"enum": ["a", "b"]}).name == 'one of "a", "b"'
        assert spec({"type": ["string", "null"]}).name == "string | null"


# -- validate ------------------------------------------------------------------------------------


class TestValidate:
    def test_python_type_validates_and_converts(self) -> None:
        value = TypeSpec.of(Outer).validate({"name": "n", "inner": {"x": "3"}})
        assert isinstance(value, Outer)
        assert value.inner.x == 3

    def test_json_text_is_parsed_for_non_string_types(self) -> None:
        assert TypeSpec.of(int).validate("42") == 42
        assert TypeSpec.of(Outer).validate('{"name": "n", "inner": {"x": 1}}').inner.x == 1
        assert spec({"type": "object"}).validate('{"a": 1}') == {"a": 1}

    def test_strings_are_not_parsed_as_json_for_string_types(self) -> None:
        assert TypeSpec.of(str).validate("42") == "42"
        assert TypeSpec.of(Literal["a", "b"]).validate("a") == "a"
        assert spec({"type": "string"}).validate('{"a": 1}') == '{"a": 1}'

    def test_errors_list_every_failing_field_by_path(self) -> None:
        with pytest.raises(OutputValidationError) as info:
            TypeSpec.of(Outer).validate({"inner": {"x": "nope"}}, "output of node 'n'")
        err = info.value
        assert "output of node 'n' is invalid" in str(err)
        assert any(e.startswith("name:") for e in err.errors)
        assert any(e.startswith("inner.x:") for e in err.errors)
        assert err.value == {"inner": {"x": "nope"}}

    def test_schema_only_types_report_each_error_by_path(self) -> None:
        t = spec(
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
                "required": ["a", "b"],
            }
        )
        assert t.validate({"a": 1, "b": "x"}) == {"a": 1, "b": "x"}
        with pytest.raises(OutputValidationError) as info:
            t.validate({"a": "one", "b": 2})
        assert len(info.value.errors) == 2
        assert info.value.errors[0].startswith("a:")
        assert info.value.errors[1].startswith("b:")

    def test_a_missing_required_property_is_reported_at_the_root(self) -> None:
        with pytest.raises(OutputValidationError, match="'a' is a required property"):
            spec({"type": "object", "required": ["a"]}).validate({})

    def test_text_that_is_not_json_is_an_error_not_a_crash(self) -> None:
        with pytest.raises(OutputValidationError, match="not valid JSON"):
            spec({"type": "object"}).validate("not json")
        with pytest.raises(OutputValidationError):
            TypeSpec.of(int).validate("forty-two")

    def test_literal_rejects_other_strings(self) -> None:
        with pytest.raises(OutputValidationError, match="'a' or 'b'"):
            TypeSpec.of(Literal["a", "b"]).validate("c")

    def test_untyped_port_accepts_anything(self) -> None:
        for value in (None, 1, "x", [1], {"a": {}}):
            assert ANY.validate(value) == value


# -- field ---------------------------------------------------------------------------------------


class TestField:
    def test_a_model_field_has_its_type_and_python_annotation(self) -> None:
        inner = TypeSpec.of(Outer).field("inner")
        assert inner is not None
        assert inner.python_type is Inner
        assert inner.schema["type"] == "object"  # the $ref is followed
        x = inner.field("x")
        assert x is not None and x.schema["type"] == "integer"

    def test_unknown_field_is_none(self) -> None:
        assert TypeSpec.of(Outer).field("nope") is None
        assert TypeSpec.of(Outer).field("inner").field("nope") is None  # type: ignore[union-attr]

    def test_scalars_have_no_fields(self) -> None:
        assert TypeSpec.of(int).field("x") is None
        assert TypeSpec.of(str).field("upper") is None

    def test_untyped_values_and_open_objects_yield_untyped_fields(self) -> None:
        assert ANY.field("anything") is ANY
        assert spec({"type": "object"}).field("anything") is ANY
        assert TypeSpec.of(dict[str, int]).field("k") is ANY

    def test_schema_fields_follow_refs_and_keep_definitions(self) -> None:
        t = spec(
            {
                "type": "object",
                "properties": {"p": {"$ref": "#/$defs/P"}},
                "$defs": {
                    "P": {"type": "object", "properties": {"q": {"$ref": "#/$defs/Q"}}},
                    "Q": {"type": "integer"},
                },
            }
        )
        p = t.field("p")
        assert p is not None
        q = p.field("q")
        assert q is not None and q.schema["type"] == "integer"


# -- schema_compatible ---------------------------------------------------------------------------


def compat(producer: Any, consumer: Any) -> str | None:
    as_spec = lambda t: t if isinstance(t, TypeSpec) else TypeSpec.of(t)  # noqa: E731
    return schema_compatible(as_spec(producer), as_spec(consumer))


class TestSchemaCompatible:
    @pytest.mark.parametrize(
        ("producer", "consumer"),
        [
            (str, str),
            (int, int),
            (int, float),  # integers are numbers
            (Literal["a", "b"], str),
            (Literal["a"], Literal["a", "b"]),
            (Color, str),
            (Outer, Outer),
            (list[int], list[float]),
        ],
    )
    def test_matching_types_are_compatible(self, producer: Any, consumer: Any) -> None:
        assert compat(producer, consumer) is None

    @pytest.mark.parametrize(
        ("producer", "consumer"),
        [
            (ANY, int),
            (int, ANY),
            (str | None, str),  # might be a string
            (str, str | None),
            (spec({"type": "object"}), Outer),  # an open object might have the fields
            (dict[str, Any], Outer),
            (spec({"anyOf": [{"type": "string"}, {}]}), int),  # one branch is untyped
            (spec({"type": "array"}), list[int]),  # items unknown
            (spec({"oneOf": [{"type": "string"}, {"type": "integer"}]}), int),
        ],
    )
    def test_unknown_or_overlapping_cases_are_accepted(self, producer: Any, consumer: Any) -> None:
        assert compat(producer, consumer) is None

    def test_different_json_types_are_a_mismatch(self) -> None:
        assert compat(str, int) == "produces string but integer is expected"
        assert compat(list[str], str) == "produces array of string but string is expected"
        assert compat(spec({"type": ["string", "null"]}), int) is not None

    def test_enum_values_outside_the_consumer_are_a_mismatch(self) -> None:
        why = compat(Literal["a", "b", "c"], Literal["a", "b"])
        assert why is not None and "'c'" in why

    def test_missing_required_field_is_a_mismatch(self) -> None:
        class NeedsExtra(BaseModel):
            name: str
            extra: int

        assert compat(Outer, NeedsExtra) == "lacks required field(s) extra"

    def test_nested_field_mismatch_names_the_path(self) -> None:
        class Other(BaseModel):
            x: str

        class Wants(BaseModel):
            inner: Other

        assert compat(Outer, Wants) == "produces integer at 'inner.x' but string is expected"

    def test_array_item_mismatch_names_the_path(self) -> None:
        assert compat(list[str], list[int]) == "produces string at '[]' but integer is expected"
        wants = spec(
            {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "string"}}}}
        )
        assert compat(list[Inner], wants) == "produces integer at '[].x' but string is expected"

    def test_const_producer_is_described_by_its_value(self) -> None:
        assert compat(spec({"const": 3}), str) == "produces 3 but string is expected"
        assert compat(spec({"const": "a"}), Literal["a", "b"]) is None
