# Runs first on every reset. Only what cannot fail: the app starts from main.py.
import gc

gc.collect()
