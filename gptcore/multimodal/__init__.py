"""Multimodal inputs for gptcore's GPT: encoders (ViT, audio, video + temporal projector),
projectors, LLaVA-style splicing with packed sequences, and procedurally generated data."""
