"""Package-level contracts: lazy imports, layering, public names, the console script."""

import subprocess

import nbdeploy
from tests.helpers import imported_after

LOAD_EXT = """
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic('load_ext', 'nbdeploy')
assert 'deploy' in ip.magics_manager.magics['line']
"""


def test_load_ext_imports_neither_mlflow_pandas_nor_sklearn() -> None:
    assert imported_after(LOAD_EXT, ["mlflow", "pandas", "sklearn", "numpy"]) == []


def test_all_matches_public_names() -> None:
    public = {n for n in dir(nbdeploy) if not n.startswith("_")} | {"__version__"}
    assert set(nbdeploy.__all__) == public
    for name in nbdeploy.__all__:
        assert getattr(nbdeploy, name) is not None


def test_core_does_not_import_ipython() -> None:
    core = "import nbdeploy, nbdeploy.registry, nbdeploy.stats.profile, nbdeploy.cli, nbdeploy.deployments"
    core += "; import nbdeploy.validation"
    assert imported_after(core, ["IPython", "ipywidgets", "anywidget"]) == []


def test_the_kernel_does_not_import_the_servers_web_stack() -> None:
    kernel = LOAD_EXT + "import nbdeploy.deployments, nbdeploy.commands, nbdeploy.registry\n"
    assert imported_after(kernel, ["starlette", "uvicorn", "prometheus_client"]) == []


def test_console_script_version() -> None:
    out = subprocess.run(["nbdeploy", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"nbdeploy {nbdeploy.__version__}"


def test_no_module_is_over_300_lines() -> None:
    from pathlib import Path

    src = Path(nbdeploy.__file__).parent
    long = {str(p.relative_to(src)): n for p in src.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}, "split these modules by concern"


def test_the_layering_contracts_hold() -> None:
    out = subprocess.run(["lint-imports"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "0 broken" in out.stdout


def test_no_function_is_over_65_lines() -> None:
    import ast
    from pathlib import Path

    src = Path(nbdeploy.__file__).parent
    long = {}
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno:
                if (n := node.end_lineno - node.lineno + 1) > 65:
                    long[f"{path.relative_to(src)}:{node.name}"] = n
    assert long == {}, "split these functions"


def test_a_feature_of_an_extra_not_installed_names_the_extra() -> None:
    import pytest

    from nbdeploy.errors import InvalidInputError, require

    require("json", "batch", "Batch scoring")  # installed: nothing said
    with pytest.raises(InvalidInputError) as caught:
        require("nbdeploy_no_such_module", "batch", "Batch scoring")
    assert str(caught.value) == (
        "Batch scoring needs nbdeploy_no_such_module, which is not installed here: pip install 'nbdeploy[batch]'."
    )


def test_the_servers_app_imports_scipy_stats_only_when_drift_is_computed() -> None:
    """``scipy.stats`` costs about 0.8 s to import: a server whose model does not need it (a
    pyfunc model, say) starts without it, and the first drift figure imports it."""
    assert imported_after("import nbdeploy.serving.app, nbdeploy.serving.__main__", ["scipy.stats"]) == []
    figure = (
        "import numpy as np, nbdeploy.stats.drift as d\n"
        "col = {'name': 'x', 'kind': 'numeric', 'min': 0.0, 'max': 9.0, 'edges': [3.0, 6.0], 'counts': [30, 30, 40]}\n"
        "assert d.column_drift(col, np.linspace(0, 9, 100)).status == 'ok'"
    )
    assert imported_after(figure, ["scipy.stats"]) == ["scipy.stats"]
