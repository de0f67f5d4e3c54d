"""Matryoshka embeddings on the gptcore trunk: EmbeddingModel, the loss, the corrupted-names
retrieval task, retrieval metrics, packing and pooling; the `gptcore embed-demo` demo in demo.py, its command line in cli.py."""
from gptcore.embed.loss import info_nce, matryoshka_loss
from gptcore.embed.model import EmbeddingModel
from gptcore.embed.metrics import funnel_accuracy, target_ranks, topk_accuracy
from gptcore.embed.pooling import last_pool, mean_pool, pack, unpad
from gptcore.embed.task import (RetrievalTask, corrupt, edit_distance, hard_negatives,
                                make_task, neighbours)

__all__ = ["EmbeddingModel", "RetrievalTask", "corrupt", "edit_distance", "funnel_accuracy",
           "hard_negatives",
           "info_nce", "last_pool", "make_task", "matryoshka_loss", "mean_pool", "neighbours",
           "pack", "target_ranks", "topk_accuracy", "unpad"]
