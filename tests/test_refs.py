import pytest

from nbdeploy.errors import InvalidInputError, InvalidReferenceError
from nbdeploy.refs import ModelRef, parse_ref, validate_name


@pytest.mark.parametrize(
    ("text", "expected", "uri"),
    [
        ("cancer", ModelRef("cancer"), "models:/cancer/latest"),
        ("cancer/3", ModelRef("cancer", version=3), "models:/cancer/3"),
        ("cancer@champion", ModelRef("cancer", alias="champion"), "models:/cancer@champion"),
        ("models:/cancer/3", ModelRef("cancer", version=3), "models:/cancer/3"),
        ("models:/cancer@champion", ModelRef("cancer", alias="champion"), "models:/cancer@champion"),
        ("models:/my.model-2", ModelRef("my.model-2"), "models:/my.model-2/latest"),
        (
            "runs:/0123456789abcdef/model",
            ModelRef(None, run_id="0123456789abcdef", path="model"),
            "runs:/0123456789abcdef/model",
        ),
    ],
)
def test_parse_ref_accepts_every_form(text: str, expected: ModelRef, uri: str) -> None:
    assert parse_ref(text) == expected
    assert parse_ref(text).uri == uri


@pytest.mark.parametrize("text", ["", "cancer/", "cancer/x", "cancer@", "a b", "models:/", "runs:/xyz", "@x", "c/1/2"])
def test_parse_ref_rejects_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(InvalidReferenceError) as err:
        parse_ref(text)
    assert str(err.value) == (
        f"Invalid model reference {text!r}: expected NAME, NAME/VERSION, NAME@ALIAS, "
        "models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH."
    )


def test_str_round_trips() -> None:
    for text in ["cancer", "cancer/3", "cancer@champion", "runs:/0123456789abcdef/model"]:
        assert str(parse_ref(text)) == text


@pytest.mark.parametrize("bad", ["a b", "-x", "a/b", "a@b", "", 3, "x" * 129])
def test_validate_name_rejects(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="Invalid model name"):
        validate_name(bad)


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("my alias", "Invalid alias 'my alias': use letters, digits, '_' and '-', starting with a letter or '_'."),
        ("latest", "Invalid alias 'latest': MLflow reserves 'latest' and 'v<number>'; choose another."),
        ("v2", "Invalid alias 'v2': MLflow reserves 'latest' and 'v<number>'; choose another."),
    ],
)
def test_validate_alias(alias: str, message: str) -> None:
    from nbdeploy.refs import validate_alias

    with pytest.raises(InvalidInputError) as err:
        validate_alias(alias)
    assert str(err.value) == message
    assert validate_alias("champion") == "champion"


def test_display_uri_hides_credentials() -> None:
    from nbdeploy.config import display_uri

    assert display_uri("http://ada:s3cret@mlflow.internal:5000") == "http://***@mlflow.internal:5000"
    assert display_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


@pytest.mark.parametrize("bad", ["cancer\n", "cancer\n/1", "cancer@champion\n", "runs:/0123abcd/model\n"])
def test_a_trailing_newline_is_never_part_of_a_name(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_name(bad)
    try:  # a reference may carry surrounding whitespace, never a name that does
        ref = parse_ref(bad)
    except InvalidInputError:
        return
    assert "\n" not in str(ref) and (ref.name is None or validate_name(ref.name) == ref.name)


def test_a_trailing_newline_is_not_an_alias() -> None:
    from nbdeploy.refs import validate_alias

    for bad in ("champion\n", "champion\n\n"):
        with pytest.raises(InvalidInputError):
            validate_alias(bad)
