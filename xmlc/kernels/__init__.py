"""Fast kernels, each beside its plain reference: the readable path of the library calls one
function here, and ``tests/test_kernels_*.py`` pin fast == reference. Only torch and numpy:
nothing here imports from xmlc, so every layer may use it.
"""
