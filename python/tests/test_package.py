"""The installed package: version, stubs that match the compiled core, docstrings with formulas."""

import ast
import inspect
import pathlib

import loaq
import loaq._core as core


def test_version_and_build_info():
    assert loaq.__version__ == "0.1.0"
    assert set(loaq.build_info) == {"simd", "openmp"}


def test_core_stub_names_exist():
    stub = pathlib.Path(loaq.__file__).with_name("_core.pyi")
    assert stub.exists(), "the .pyi stub must be installed with the package"
    assert pathlib.Path(loaq.__file__).with_name("py.typed").exists()
    tree = ast.parse(stub.read_text())
    names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    names += [n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)]
    for name in names:
        if not name.startswith("_"):
            assert hasattr(core, name), name


def test_public_api_is_annotated_and_documented():
    for name in loaq.__all__:
        obj = getattr(loaq, name)
        if callable(obj) and not isinstance(obj, type):
            sig = inspect.signature(obj)
            assert sig.return_annotation is not inspect.Signature.empty, name
            assert obj.__doc__, name
            if name in ("gptq", "gptaq", "rtn", "solve_target", "solve_objective"):
                assert "Grid (chosen at run time)" in obj.__doc__, name
        if isinstance(obj, type):
            assert obj.__doc__, name
    assert "(2/n_seq)" in loaq.CalibrationAccumulator.__doc__
    assert "W* = W + α W C Ĥ⁻¹ + β G Ĥ⁻¹" in loaq.solve_target.__doc__
    # Options keep the C++ defaults.
    p = inspect.signature(loaq.gptq).parameters
    assert (p["block_size"].default, p["group_size"].default, p["percdamp"].default) == (128, -1, 0.01)
    assert inspect.signature(loaq.gptaq).parameters["alpha"].default == 0.25
