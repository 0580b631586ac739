"""Package-level contracts: lazy imports, public names, the console script."""

import subprocess
import sys

import nbdeploy


def test_load_ext_imports_neither_mlflow_pandas_nor_sklearn() -> None:
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'nbdeploy')\n"
        "assert 'deploy' in ip.magics_manager.magics['line']\n"
        "print(sorted(m for m in ('mlflow', 'pandas', 'sklearn', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_all_matches_public_names() -> None:
    public = {n for n in dir(nbdeploy) if not n.startswith("_")} | {"__version__"}
    assert set(nbdeploy.__all__) == public
    for name in nbdeploy.__all__:
        assert getattr(nbdeploy, name) is not None


def test_core_does_not_import_ipython() -> None:
    code = (
        "import sys, nbdeploy, nbdeploy.registry, nbdeploy.profile, nbdeploy.cli\n"
        "print([m for m in ('IPython', 'ipywidgets', 'anywidget') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_version() -> None:
    out = subprocess.run(["nbdeploy", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"nbdeploy {nbdeploy.__version__}"
