"""Model families whose networks come whole from a library or the user's code, chosen by MODEL.arch
`<family>:<name>` (model.registry.FAMILIES): torchvision:<builder>, hf:<folder>, smp:<Architecture>,
python:<module>:<function>. One adapter (adapter.py) gives them all the model contract; the libraries are imported
only when such a model is built (packages.py). See docs/your_own_model.md."""
from model.library import hf, python_builder, smp, torchvision_models  # noqa: F401  (each registers its family)
from model.library.adapter import LibraryModel, wrap_model

__all__ = ["LibraryModel", "wrap_model"]
