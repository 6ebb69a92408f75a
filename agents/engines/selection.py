from agents.engines.base import Engine
from agents.engines.builtin import BuiltinEngine
from agents.engines.openai import OpenAIEngine


def engine_for(engine_name: str) -> Engine:
    """The engine an agent names (`builtin` for anything but `openai`)."""
    return OpenAIEngine() if engine_name == "openai" else BuiltinEngine()
