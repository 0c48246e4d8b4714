"""hf_interest: interest-evolution sequence models for recommender systems, built on the Hugging Face stack.

`import hf_interest` registers the model with the `transformers` Auto classes:

- `AutoConfig` for `model_type="interest"` -> `InterestConfig`
- `AutoModel` -> `InterestModel` (the backbone: interest states u_t)
- `AutoModelForCausalLM` -> `InterestForNextItemPrediction`: next-item prediction is causal language modelling over
  an item vocabulary (shifted labels, logits over the vocabulary, output tied to the input embeddings)
- `AutoModelForSequenceClassification` -> `InterestForClickPrediction`: will this user click this candidate (one
  binary label per history and candidate)
- `AutoModelForTokenClassification` -> `InterestForInterestForecasting`: a distribution over item categories after
  every event (one label distribution per position)
- `AutoTokenizer` -> `ItemTokenizer` (the item vocabulary)
- the `transformers.pipeline` task `"next-item-recommendation"` -> `NextItemRecommendationPipeline`

Saved checkpoints carry the same mapping in `auto_map` (a head checkpoint: `AutoConfig`, `AutoModel` and its own
class), so they also load with `trust_remote_code=True` where this package is not installed. With the package
installed, no remote code is needed.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from .configuration_interest import InterestConfig
from .modeling_interest import (
    DEFAULT_LORA_TARGET_MODULES,
    ClickPredictionOutput,
    InterestForClickPrediction,
    InterestForecastingOutput,
    InterestForInterestForecasting,
    InterestForNextItemPrediction,
    InterestModel,
    InterestModelOutput,
    InterestPreTrainedModel,
    NextItemPredictionOutput,
    RecommendationOutput,
)
from .pipelines import TASK as RECOMMENDATION_TASK
from .pipelines import NextItemRecommendationPipeline, register_pipeline
from .tokenization_interest import ItemTokenizer

__version__ = "0.1.0"

AutoConfig.register(InterestConfig.model_type, InterestConfig, exist_ok=True)
AutoModel.register(InterestConfig, InterestModel, exist_ok=True)
AutoModelForCausalLM.register(InterestConfig, InterestForNextItemPrediction, exist_ok=True)
AutoModelForSequenceClassification.register(InterestConfig, InterestForClickPrediction, exist_ok=True)
AutoModelForTokenClassification.register(InterestConfig, InterestForInterestForecasting, exist_ok=True)
AutoTokenizer.register(InterestConfig, tokenizer_class=ItemTokenizer, exist_ok=True)
# Saving writes the code files and `auto_map`, so checkpoints load with `trust_remote_code=True` without this package.
InterestConfig.register_for_auto_class("AutoConfig")
InterestModel.register_for_auto_class("AutoModel")
InterestForNextItemPrediction.register_for_auto_class("AutoModelForCausalLM")
InterestForClickPrediction.register_for_auto_class("AutoModelForSequenceClassification")
InterestForInterestForecasting.register_for_auto_class("AutoModelForTokenClassification")
ItemTokenizer.register_for_auto_class("AutoTokenizer")
register_pipeline()  # transformers.pipeline("next-item-recommendation", model=...)

__all__ = [
    "ClickPredictionOutput",
    "DEFAULT_LORA_TARGET_MODULES",
    "InterestForClickPrediction",
    "InterestForInterestForecasting",
    "InterestForecastingOutput",
    "InterestConfig",
    "InterestForNextItemPrediction",
    "InterestModel",
    "InterestModelOutput",
    "InterestPreTrainedModel",
    "ItemTokenizer",
    "NextItemRecommendationPipeline",
    "RECOMMENDATION_TASK",
    "NextItemPredictionOutput",
    "RecommendationOutput",
    "__version__",
]
