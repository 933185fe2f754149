"""harmony-filter: make gpt-oss (Harmony format) servers speak clean OpenAI Chat Completions."""

__version__ = "0.1.0"
