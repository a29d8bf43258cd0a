# Copyright (c) mmbinary contributors. All rights reserved.
"""``import mmbinary`` works with the compiled extension hidden; what needs
the extension then raises, saying why and how to build it."""
import subprocess
import sys
import textwrap


def test_import_with_extension_hidden():
    script = textwrap.dedent("""
        import sys

        class HideExtension:
            def find_spec(self, name, path=None, target=None):
                if name == 'mmbinary._C':
                    raise ImportError('hidden by the test')

        sys.meta_path.insert(0, HideExtension())
        import torch
        import mmbinary
        from mmbinary.ops import ext_loaded, ext_load_error, require_ext
        assert not ext_loaded()
        assert 'hidden by the test' in ext_load_error()
        try:
            require_ext('mmbinary.ops.profiling')
        except RuntimeError as error:
            message = str(error)
            assert 'hidden by the test' in message, message
            assert 'pip install -v -e . --no-build-isolation' in message
            print('RAISED')
    """)
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'RAISED' in result.stdout
