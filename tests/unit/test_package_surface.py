"""The public surface stays small and light: `import torchshield` pulls no heavy library."""

import subprocess
import sys

import pytest

import torchshield
from torchshield import errors


def test_import_is_light():
    code = ("import sys, torchshield, torchshield.errors, torchshield.cli.app;"
            "heavy = [m for m in ('torch', 'pandas', 'fastapi', 'flwr', 'opacus', 'sklearn') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import torchshield loaded heavy modules: {out}"


def test_all_is_sorted_and_resolves():
    for mod in (torchshield, errors):
        names = [n for n in mod.__all__ if n != "__version__"]
        assert names == sorted(names)
        for n in mod.__all__:
            assert getattr(mod, n) is not None


def test_error_tree_exit_codes():
    assert errors.InputError("x").exit_code == 2
    assert errors.FormatError("x").exit_code == 2
    assert errors.WrongKeyError("x").exit_code == 2
    assert errors.IntegrityError("x").exit_code == 1
    assert errors.SignatureError("x").exit_code == 1
    assert errors.UnsafeFileError("x").exit_code == 1
    assert errors.PrivacyBudgetExceeded("x").exit_code == 3
    assert errors.AccessDenied("x").exit_code == 3
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.ShieldError)
    e = errors.InputError("field 'k' is wrong", hint="set k to 5")
    assert str(e) == "field 'k' is wrong (set k to 5)"


def test_about_names_the_field_and_keeps_class_and_hint():
    with pytest.raises(errors.KeyMaterialError) as caught, errors.about("output.signing_key"):
        raise errors.KeyMaterialError("signing key k does not exist", hint="create one")
    assert caught.value.message == "output.signing_key: signing key k does not exist"
    assert caught.value.hint == "create one" and caught.value.exit_code == 2
    with pytest.raises(errors.MissingDependencyError, match="'flwr' package"), errors.about("x"):
        raise errors.MissingDependencyError("flwr", "federated")
    with pytest.raises(errors.IntegrityError, match="^bad$"), errors.about("x"):  # not an InputError
        raise errors.IntegrityError("bad")


def test_scanner_does_not_import_torch():
    code = "import sys, torchshield.model.scan; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
