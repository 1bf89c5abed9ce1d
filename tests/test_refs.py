import pytest

from scoregate.errors import InvalidReferenceError
from scoregate.refs import ModelRef, validate_alias, validate_model_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("credit-risk", ModelRef("credit-risk")),
        ("credit-risk@3", ModelRef("credit-risk", version=3)),
        ("credit-risk@production", ModelRef("credit-risk", alias="production")),
        ("a.b_c-1@v2", ModelRef("a.b_c-1", alias="v2")),
        ("  m@1 ", ModelRef("m", version=1)),
    ],
)
def test_parse(text: str, expected: ModelRef) -> None:
    parsed = ModelRef.parse(text)
    assert parsed == expected
    assert ModelRef.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text", ["", "@1", "m@", "m@0", "m@-2", "m@1.5", "m@a@b", "with space", "-lead", "m@_x", "m@" + "a" * 80]
)
def test_one_message_for_every_bad_reference(text: str) -> None:
    with pytest.raises(
        InvalidReferenceError, match=r"invalid model reference .*expected NAME, NAME@VERSION or NAME@ALIAS"
    ):
        ModelRef.parse(text)


def test_selector_required() -> None:
    with pytest.raises(InvalidReferenceError, match="a version or alias is required"):
        ModelRef.parse("credit-risk", require_selector=True)


def test_names_and_aliases() -> None:
    assert validate_model_name("credit-risk") == "credit-risk"
    assert validate_alias("production") == "production"
    for bad in ["", "9", "has space", "x" * 65]:
        with pytest.raises(InvalidReferenceError, match="invalid alias"):
            validate_alias(bad)
    with pytest.raises(InvalidReferenceError, match="invalid model name"):
        validate_model_name("bad/name")
