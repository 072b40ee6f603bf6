"""acttail-lab: activation sparsity in LLMs guided by Heavy-Tailed Self-Regularization."""
from .core.corpus import corpus_text, load_corpus, token_windows  # noqa: F401
from .core.models import PROJECTIONS, load_model, projection_table, random_model  # noqa: F401

__version__ = "0.1.0"
