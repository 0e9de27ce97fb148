"""The public face of the three packages (`parametrizations`, `probes`, `dmft`; docs/python-api.md): every name in
each `__all__` resolves, is documented, and is loaded lazily (importing a package loads none of its modules)."""

import importlib
import inspect
import subprocess
import sys

import pytest

PACKAGES = ("parametrizations", "probes", "dmft")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_resolves_and_is_documented(package):
    pkg = importlib.import_module(package)
    assert pkg.__doc__ and 5 <= len(pkg.__all__) <= 25, "a small documented face"
    assert set(pkg.__all__) == set(pkg._FACE) and set(pkg.__all__) <= set(dir(pkg))
    for name in pkg.__all__:
        obj = getattr(pkg, name)
        if inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj):
            doc = obj.__doc__ if inspect.ismodule(obj) else inspect.getdoc(obj)
            assert doc and doc.strip(), f"{package}.{name} has no docstring"
        else:  # a constant: the face's docstring says what it is
            assert f"`{name}`" in pkg.__doc__, f"{package}.{name} is not described in the package docstring"
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        pkg.nothing_here  # noqa: B018


def test_faces_load_lazily():
    """Importing the faces loads none of their modules; the solver and the executors stay free of model code."""
    code = (
        "import sys, parametrizations, probes, dmft; before = sorted(m for m in sys.modules if "
        "m.startswith(('parametrizations.', 'probes.', 'dmft.'))); import dmft.dynamics, probes.grid.executors; "
        "print(before, 'parametrizations.transformer' in sys.modules, "
        "any(m.startswith('probes.experiment.run') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "False", "False"], out.stdout


def test_the_face_is_the_module_function():
    """A face name is the very object of its module (no wrapper), and `check_sweep` is dmft.check.check even after
    the module dmft.check has been imported (the module keeps its own name)."""
    import dmft
    import dmft.check
    import parametrizations
    from parametrizations.own_model import apply_parametrization

    assert parametrizations.apply_parametrization is apply_parametrization
    assert dmft.check_sweep is dmft.check.check and inspect.ismodule(dmft.check)
