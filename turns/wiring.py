"""The wiring: the engines (agents) call the tools and builtin modes of the apps above them, registered
here, where every app is known (called from TurnsConfig.ready)."""

from agents.engines.builtin import BuiltinMode, builtin_modes_register
from agents.tools import file_keeper_register, tools_register
from dataframes import builtin as dataframes_builtin
from dataframes import tools as dataframes_tools
from files import builtin as files_builtin
from files import tools as files_tools


def wire() -> None:
    tools_register(*files_tools.TOOLS, *dataframes_tools.TOOLS)
    file_keeper_register(files_tools.tool_file_keep)
    builtin_modes_register(  # most specific first
        BuiltinMode(
            "SQL",
            dataframes_builtin.may_answer_with_sql,
            dataframes_builtin.answer_with_sql,
            "no SQL query in the message",
        ),
        BuiltinMode(
            "retrieval", files_builtin.may_answer_from_files, files_builtin.answer_from_files, "no indexed files"
        ),
    )
