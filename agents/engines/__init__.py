"""Engines: small classes behind one async interface (see base.Engine)."""

from agents.engines.base import (
    ChatMessage,
    Citations,
    Content,
    DataFrameProduced,
    Engine,
    EngineFailure,
    Event,
    FileProduced,
    Thinking,
    TurnContext,
    Usage,
)
from agents.engines.builtin import BuiltinEngine
from agents.engines.openai import OpenAIEngine

__all__ = [
    "ChatMessage",
    "Citations",
    "Content",
    "DataFrameProduced",
    "Engine",
    "EngineFailure",
    "Event",
    "FileProduced",
    "Thinking",
    "TurnContext",
    "Usage",
    "engine_for",
]


def engine_for(engine_name: str) -> Engine:
    return OpenAIEngine() if engine_name == "openai" else BuiltinEngine()
