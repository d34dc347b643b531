# Copyright 2026 the @afterward/background-tasks authors. MIT license.
"""The FastAPI peer of bench/http_server.ts: the seed's route shape, with no
background task, a sync one and an async one. Run by bench/http.ts under
uvicorn when Debian's python3-fastapi and python3-uvicorn are installed:

    python3 -m uvicorn --app-dir bench fastapi_app:plain --port 8000
"""

from fastapi import BackgroundTasks, FastAPI
from fastapi.responses import PlainTextResponse

sink = 0


def trivial_task(n: int) -> None:
    global sink
    sink += n


async def trivial_async_task(n: int) -> None:
    global sink
    sink += n


plain = FastAPI()
sync_task = FastAPI()
async_task = FastAPI()


@plain.get("/", response_class=PlainTextResponse)
async def plain_route() -> str:
    return "ok"


@sync_task.get("/", response_class=PlainTextResponse)
async def sync_task_route(background_tasks: BackgroundTasks) -> str:
    background_tasks.add_task(trivial_task, 1)
    return "ok"


@async_task.get("/", response_class=PlainTextResponse)
async def async_task_route(background_tasks: BackgroundTasks) -> str:
    background_tasks.add_task(trivial_async_task, 1)
    return "ok"
