"""A corpus of --fit training functions: ``broken`` (each hides one silent training bug, mapped to the sanity
finding that must FAIL for it) and ``correct`` (common, correct styles that must get no FAIL and no WARN).

Every function follows the plug-in protocol FUNC(model, X, y, epochs, device) and trains ``model`` in place.
"""
