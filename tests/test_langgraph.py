"""LangGraph threads as the real checkpointers write them (SqliteSaver, PostgresSaver): a
two-node graph with a fake chat model, a few threads, one grown between syncs, one with a
RemoveMessage, synced through the CLI and compared message for message with what the test put
in; a checkpoint that does not decode; kill -9 mid-sync, then a re-run."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import yaml

from tests.conftest import ROOT, new_pg_database
from tests.helpers import stats
from tests.test_crash import crash_command, kill_while_sending
from tests.test_exports import sync_sql
from tests.test_langchain import messages_of, times_of

for _var in ("LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "LANGCHAIN_API_KEY", "LANGSMITH_API_KEY"):
    os.environ.pop(_var, None)


def build_graph(saver, answers: list[str]):
    """START -> model (a fake chat model answering from `answers`) -> follow_up -> END."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.messages import AIMessage
    from langgraph.graph import END, START, MessagesState, StateGraph

    model = FakeListChatModel(responses=answers)

    def call_model(state: MessagesState):
        return {"messages": [model.invoke(state["messages"])]}

    def follow_up(state: MessagesState):
        return {"messages": [AIMessage("Anything else?")]}

    g = StateGraph(MessagesState)
    g.add_node("model", call_model)
    g.add_node("follow_up", follow_up)
    g.add_edge(START, "model")
    g.add_edge("model", "follow_up")
    g.add_edge("follow_up", END)
    return g.compile(checkpointer=saver)


def cfg(thread: str) -> dict:
    return {"configurable": {"thread_id": thread}}


def first_threads(graph) -> None:
    from langchain_core.messages import HumanMessage, RemoveMessage, SystemMessage

    graph.invoke({"messages": [SystemMessage("Be brief."), HumanMessage("Plan a run")]}, cfg("ana:fitness"))
    graph.invoke({"messages": [HumanMessage("Soup for tonight?")]}, cfg("ben:food"))
    graph.invoke({"messages": [HumanMessage("My PIN is 1234")]}, cfg("cy:notes"))
    graph.invoke({"messages": [HumanMessage("Forget that. Remind me of milk.")]}, cfg("cy:notes"))
    # the app deletes the PIN message and the answer to it
    state = graph.get_state(cfg("cy:notes")).values["messages"]
    graph.update_state(cfg("cy:notes"), {"messages": [RemoveMessage(id=state[0].id), RemoveMessage(id=state[1].id)]})


ANSWERS = ["5 km easy.", "Tomato soup.", "Noted.", "Milk, noted.", "Then 6 km."]
ANA = [("system", "Be brief."), ("user", "Plan a run"), ("assistant", "5 km easy."), ("assistant", "Anything else?")]
BEN = [("user", "Soup for tonight?"), ("assistant", "Tomato soup."), ("assistant", "Anything else?")]
CY = [("assistant", "Anything else?"), ("user", "Forget that. Remind me of milk."), ("assistant", "Milk, noted.")]
CY += [("assistant", "Anything else?")]


def check_two_syncs(tmp_path, server, graph, db_url) -> None:
    from langchain_core.messages import HumanMessage

    first_threads(graph)
    report = sync_sql(tmp_path, server, "langgraph-checkpoint", db_url)
    assert messages_of(server) == {("ana:fitness", "ana:fitness"): ANA, ("ben:food", "ben:food"): BEN,
                                   ("cy:notes", "cy:notes"): CY}  # fmt: skip
    assert report["counts"]["delivered"] == 11 and report["counts"]["quarantined"] == 0
    assert times_of(server) == [None] * 11  # messages carry no time: none is sent

    # the thread grows; the nightly run reads the threads whose newest checkpoint is at or after
    # its cursor (ana's, and cy's at the inclusive bound): their old messages are already delivered
    graph.invoke({"messages": [HumanMessage("And tomorrow?")]}, cfg("ana:fitness"))
    again = sync_sql(tmp_path, server, "langgraph-checkpoint", db_url)
    assert again["counts"]["delivered"] == 3 and again["counts"]["already_delivered"] == 8, again["counts"]
    grown = [*ANA, ("user", "And tomorrow?"), ("assistant", "Then 6 km."), ("assistant", "Anything else?")]
    assert messages_of(server)[("ana:fitness", "ana:fitness")] == grown
    third = sync_sql(tmp_path, server, "langgraph-checkpoint", db_url)  # nothing new: nothing sent
    assert third["counts"]["requests"] == 0


def test_sqlite_saver_threads_grow_and_removed_messages_stay_out(tmp_path, dev_server):
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = tmp_path / "graph.db"
    with sqlite3.connect(path, check_same_thread=False) as conn:
        graph = build_graph(SqliteSaver(conn), ANSWERS)
        check_two_syncs(tmp_path, dev_server.url, graph, f"sqlite:///{path}")


def test_postgres_saver_threads_grow_and_removed_messages_stay_out(tmp_path, dev_server, postgres_url):
    from langgraph.checkpoint.postgres import PostgresSaver

    db = new_pg_database(postgres_url, "lg")
    with PostgresSaver.from_conn_string(db.replace("postgresql+psycopg://", "postgresql://")) as saver:
        saver.setup()
        check_two_syncs(tmp_path, dev_server.url, build_graph(saver, ANSWERS), db)


def test_a_checkpoint_that_does_not_decode_is_one_quarantined_row(tmp_path, dev_server):
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.sqlite import SqliteSaver

    from tasks.quarantine import read_quarantine

    path = tmp_path / "graph.db"
    with sqlite3.connect(path, check_same_thread=False) as conn:
        graph = build_graph(SqliteSaver(conn), ["Hi."])
        graph.invoke({"messages": [HumanMessage("Hello")]}, cfg("ok"))
        conn.execute(
            "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, type, checkpoint) "
            "VALUES ('broken', '', '1f0a0000-0000-6000-8000-000000000000', 'msgpack', X'c1c1c1')"
        )
        conn.commit()
    report = sync_sql(
        tmp_path, dev_server.url, "langgraph-checkpoint", f"sqlite:///{path}", load={"max_failed_share": 0.5}
    )
    assert messages_of(dev_server.url) == {
        ("ok", "ok"): [("user", "Hello"), ("assistant", "Hi."), ("assistant", "Anything else?")]
    }
    (row,) = read_quarantine(tmp_path / "state").to_pylist()
    assert row["reasons"][0].startswith(
        "thread broken checkpoint 1f0a0000-0000-6000-8000-000000000000: msgpack does not decode"
    )
    assert report["counts"]["quarantined"] == 1


def test_kill_9_during_a_langgraph_sync_then_a_rerun_is_exact(tmp_path, dev_server):
    """200 threads of 12 messages (2,400, 600 requests at 60 a second), killed three times mid-send."""
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = tmp_path / "graph.db"
    expected = {}
    with sqlite3.connect(path, check_same_thread=False) as conn:
        graph = build_graph(SqliteSaver(conn), ["Sure."] * 200)
        for t in range(200):
            asks = [f"question {q} of thread {t}" for q in range(10)]
            graph.invoke({"messages": [HumanMessage(a) for a in asks]}, cfg(f"t{t:03}"))
            expected[(f"t{t:03}", f"t{t:03}")] = [("user", a) for a in asks] + [
                ("assistant", "Sure."),
                ("assistant", "Anything else?"),
            ]
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        yaml.safe_dump(
            {"preset": "langgraph-checkpoint", "source": {"name": "lg", "sql": {"url": f"sqlite:///{path}"}}}
        )
    )
    cmd = crash_command(tmp_path, mapping, dev_server)
    kill_while_sending(cmd, dev_server, times=3)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert messages_of(dev_server.url) == expected  # every message once, in order
    assert stats(dev_server.url)["messages"] == 2400
