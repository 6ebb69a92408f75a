"""Engines: small classes behind one async interface (base.Engine), re-exported here; `engine_for` (in
agents.engines.selection) picks one by name."""

from agents.engines.base import (
    ChatMessage,
    Citations,
    Content,
    DataFrameProduced,
    Engine,
    EngineFailure,
    Event,
    FileProduced,
    Finished,
    Thinking,
    ToolCallEnded,
    ToolCallStarted,
    TurnContext,
    Usage,
)

__all__ = [
    "ChatMessage",
    "Citations",
    "Content",
    "DataFrameProduced",
    "Engine",
    "EngineFailure",
    "Event",
    "FileProduced",
    "Finished",
    "Thinking",
    "ToolCallEnded",
    "ToolCallStarted",
    "TurnContext",
    "Usage",
]
