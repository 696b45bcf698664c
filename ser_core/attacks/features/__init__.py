"""The study's attacks on standardised log-Mel features, one per file; each registers on import."""
import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
