"""A graph with no LLM for end-to-end tests against the real AgentFlow server.

It answers every run with what the server handed it, so a test can check whom the
server attributed the request to:

- node ``echo`` returns one assistant message whose text is JSON:
  ``{"user_id": config["user_id"], "thread_id": config["thread_id"],
  "last_user_message": "<text of the newest user message>",
  "claims": config["user"] minus the server's own "authz" block}``;
- node ``done`` waits ``config["delay_ms"]`` milliseconds (a client config key the
  server passes through; 0 when absent) and returns the message ``"done"``, so a
  streamed run emits its events over time and a test can see them arrive one by one.

Threads are kept by the in-memory checkpointer and memories by the in-memory store
that ships with the package (``agentflow.qa.testing.InMemoryStore``); neither
scopes data by user, which is what the gateway's tenancy tests need to prove the
gateway does.
"""

import asyncio
import json
from typing import Any

from agentflow.core import StateGraph
from agentflow.core.state import AgentState, Message
from agentflow.qa.testing.in_memory_store import InMemoryStore
from agentflow.storage.checkpointer import InMemoryCheckpointer
from agentflow.utils import END


def _last_user_text(state: AgentState) -> str | None:
    for message in reversed(state.context or []):
        if message.role == "user":
            return message.text()
    return None


def echo(state: AgentState, config: dict[str, Any]) -> list[Message]:
    """Report the identity and thread the server gave this run."""
    user = config.get("user")
    claims = {k: v for k, v in user.items() if k != "authz"} if isinstance(user, dict) else user
    seen = {
        "user_id": config.get("user_id"),
        "thread_id": config.get("thread_id"),
        "last_user_message": _last_user_text(state),
        "claims": claims,
    }
    return [Message.text_message(json.dumps(seen, default=str), role="assistant")]


async def done(state: AgentState, config: dict[str, Any]) -> list[Message]:
    """Finish after an optional delay, so stream events are spread out in time."""
    delay_ms = config.get("delay_ms") or 0
    if isinstance(delay_ms, int | float) and 0 < delay_ms <= 10_000:
        await asyncio.sleep(delay_ms / 1000)
    return [Message.text_message("done", role="assistant")]


checkpointer = InMemoryCheckpointer()
store = InMemoryStore()

_graph = StateGraph()
_graph.add_node("echo", echo)
_graph.add_node("done", done)
_graph.set_entry_point("echo")
_graph.add_edge("echo", "done")
_graph.add_edge("done", END)

app = _graph.compile(checkpointer=checkpointer, store=store)
