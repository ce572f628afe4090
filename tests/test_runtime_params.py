"""`-p NAME VALUE` strings are typed like papermill does: by the default's type, else YAML."""

from __future__ import annotations

import pytest

from compiler.runtime import coerce_parameters, resolve_parameters

SPEC = {
    "parameters": {
        "n_rows": 200,
        "rate": 0.5,
        "verbose": False,
        "label": "base",
        "columns": ["a", "b"],
        "limit": None,
    }
}


def test_values_take_the_type_of_the_default():
    typed = coerce_parameters(
        SPEC, {"n_rows": "1000", "rate": "1e-3", "verbose": "True", "label": "007"}
    )
    assert typed == {"n_rows": 1000, "rate": 0.001, "verbose": True, "label": "007"}
    assert isinstance(typed["rate"], float) and isinstance(typed["n_rows"], int)


@pytest.mark.parametrize("text, value", [("yes", True), ("false", False), ("0", False)])
def test_booleans_read_common_spellings(text, value):
    assert coerce_parameters(SPEC, {"verbose": text}) == {"verbose": value}


def test_other_types_are_read_as_yaml():
    typed = coerce_parameters(SPEC, {"columns": "[x, y, 3]", "limit": "12"})
    assert typed == {"columns": ["x", "y", 3], "limit": 12}
    assert coerce_parameters(SPEC, {"limit": "{a: 1}"}) == {"limit": {"a": 1}}


def test_unreadable_values_name_the_parameter():
    with pytest.raises(ValueError, match="n_rows.*int.*'many'"):
        coerce_parameters(SPEC, {"n_rows": "many"})
    with pytest.raises(ValueError, match="verbose"):
        coerce_parameters(SPEC, {"verbose": "perhaps"})


def test_unknown_parameter_names_the_known_ones():
    with pytest.raises(ValueError) as err:
        coerce_parameters(SPEC, {"n_row": "3"})
    message = str(err.value)
    assert "'n_row'" in message and "n_rows" in message and "rate" in message


def test_resolved_parameters_are_defaults_plus_overrides():
    assert resolve_parameters(SPEC, {"rate": 2.0})["rate"] == 2.0
    assert resolve_parameters(SPEC, None)["n_rows"] == 200
    with pytest.raises(ValueError, match="unknown parameter 'x'"):
        resolve_parameters(SPEC, {"x": 1})
