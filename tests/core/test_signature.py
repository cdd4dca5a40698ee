import numpy as np
import pandas as pd
import pytest

from modelpack.errors import InvalidInputError, SignatureError
from modelpack.signature import (
    ColSpec,
    ExtraColumnsWarning,
    Schema,
    Signature,
    TensorSpec,
    infer_schema,
    infer_signature,
)

COLS = Signature(
    inputs=Schema(
        columns=(
            ColSpec("age", "int64"),
            ColSpec("income", "float64"),
            ColSpec("city", "string"),
            ColSpec("flag", "bool", required=False),
        )
    )
)


def test_infers_columns_from_a_dataframe():
    df = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5], "c": ["x", "y"], "d": [True, False]})
    schema = infer_schema(df)
    assert [(c.name, c.dtype) for c in schema.columns] == [
        ("a", "int64"),
        ("b", "float64"),
        ("c", "string"),
        ("d", "bool"),
    ]


def test_infers_nullable_extension_types_as_their_numpy_types():
    df = pd.DataFrame({"i": pd.array([1, None], dtype="Int32"), "b": pd.array([True, None])})
    assert [c.dtype for c in infer_schema(df).columns] == ["int32", "bool"]


def test_infers_tensors_with_a_variable_batch_dimension():
    schema = infer_schema(np.zeros((5, 3, 2), dtype=np.float32))
    assert schema.tensors == (TensorSpec("float32", (-1, 3, 2)),)
    named = infer_schema({"x": np.zeros((4, 2)), "mask": np.ones((4,), dtype=bool)})
    assert [(t.name, t.dtype, t.shape) for t in named.tensors] == [
        ("x", "float64", (-1, 2)),
        ("mask", "bool", (-1,)),
    ]


def test_signature_round_trips_through_a_dict():
    sig = infer_signature(pd.DataFrame({"a": [1]}), np.array([0.5]))
    assert Signature.from_dict(sig.to_dict()) == sig


def test_missing_required_column_names_the_field():
    with pytest.raises(SignatureError) as info:
        COLS.enforce(pd.DataFrame({"age": [1], "city": ["x"]}))
    assert info.value.field == "income"
    assert "income" in str(info.value) and "float64" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_optional_column_may_be_missing_and_order_is_fixed():
    out = COLS.enforce(pd.DataFrame({"city": ["x"], "income": [2.0], "age": [3]}))
    assert list(out.columns) == ["age", "income", "city", "flag"]


def test_extra_columns_are_dropped_with_a_warning():
    df = pd.DataFrame({"age": [1], "income": [2.0], "city": ["x"], "zzz": [1]})
    with pytest.warns(ExtraColumnsWarning, match="zzz"):
        out = COLS.enforce(df)
    assert "zzz" not in out.columns


def test_int_to_float_is_safe_float_to_int_is_not():
    out = COLS.enforce({"age": [1], "income": [2], "city": ["x"]})
    assert out["income"].dtype == np.float64
    with pytest.raises(SignatureError, match="'age'") as info:
        COLS.enforce({"age": [1.5], "income": [2.0], "city": ["x"]})
    assert info.value.expected == "int64" and info.value.got == "float64"


def test_numbers_are_not_strings():
    with pytest.raises(SignatureError, match="'city'"):
        COLS.enforce({"age": [1], "income": [2.0], "city": [3]})


def test_nullable_integer_and_boolean_columns_are_handled():
    df = pd.DataFrame(
        {
            "age": pd.array([1, 2], dtype="Int64"),
            "income": pd.array([1.0, None], dtype="Float64"),
            "city": pd.array(["a", None], dtype="string"),
            "flag": pd.array([True, None], dtype="boolean"),
        }
    )
    out = COLS.enforce(df)
    assert out["age"].dtype == np.int64
    assert out["income"].dtype == np.float64 and np.isnan(out["income"].iloc[1])
    assert out["flag"].dtype == np.float64  # NA kept as NaN rather than refused
    with_na = COLS.enforce(df.assign(age=pd.array([1, None], dtype="Int64")))
    assert with_na["age"].dtype == np.float64


def test_accepts_records_dicts_and_arrays():
    records = [{"age": 1, "income": 2.0, "city": "x"}]
    assert len(COLS.enforce(records)) == 1
    sig = Signature(inputs=Schema(columns=(ColSpec("a", "float64"), ColSpec("b", "float64"))))
    out = sig.enforce(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert list(out.columns) == ["a", "b"] and out.shape == (2, 2)
    with pytest.raises(SignatureError, match="2 columns"):
        sig.enforce(np.zeros((2, 3)))


def test_int_columns_out_of_range_are_refused():
    sig = Signature(inputs=Schema(columns=(ColSpec("a", "int8"),)))
    assert sig.enforce({"a": [1, 2]})["a"].dtype == np.int8
    with pytest.raises(SignatureError, match="out of range"):
        sig.enforce({"a": [1000]})


def test_tensor_dtype_and_shape_are_enforced():
    sig = Signature(inputs=Schema(tensors=(TensorSpec("float32", (-1, 3), "x"),)))
    out = sig.enforce(np.ones((2, 3), dtype=np.int64))
    assert out.dtype == np.float32
    assert sig.enforce(np.ones((2, 3), dtype=np.float64)).dtype == np.float32
    with pytest.raises(SignatureError) as info:
        sig.enforce(np.ones((2, 4), dtype=np.float32))
    assert info.value.field == "x" and info.value.expected == [-1, 3]
    int_sig = Signature(inputs=Schema(tensors=(TensorSpec("int32", (-1,)),)))
    with pytest.raises(SignatureError, match="does not cast safely"):
        int_sig.enforce(np.array([1.5]))


def test_named_tensors_need_a_mapping():
    sig = Signature(
        inputs=Schema(tensors=(TensorSpec("float32", (-1,), "a"), TensorSpec("int64", (-1,), "b")))
    )
    out = sig.enforce({"a": [1.0], "b": [2]})
    assert set(out) == {"a", "b"}
    with pytest.raises(SignatureError, match="'b'"):
        sig.enforce({"a": [1.0]})
    with pytest.raises(SignatureError, match="mapping"):
        sig.enforce(np.zeros(3))


def test_ragged_input_is_an_input_error():
    sig = Signature(inputs=Schema(tensors=(TensorSpec("float32", (-1, -1)),)))
    with pytest.raises(InvalidInputError):
        sig.enforce([[1.0, 2.0], [1.0]])
