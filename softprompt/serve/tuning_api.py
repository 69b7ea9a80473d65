"""OpenAI's files and fine-tuning routes, in OpenAI's shapes, so its SDK drives them unchanged.

`/v1/files` takes a multipart upload (`purpose=fine-tune`), checked whole before it is kept (tuning_files.py);
`/v1/fine_tuning/jobs` creates, lists, shows and cancels jobs, with their events and checkpoints (tuning.py
runs them). Reading needs what every route needs (the API key, where one is set); uploading, creating,
cancelling and deleting need the admin token, or the API key where one is configured. Lists are OpenAI's
cursor pages: `limit` items after the id `after`, and `has_more`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse

from ..prompts import checkpoint
from ..utils.errors import SoftpromptError
from .auth import bearer_matches
from .guards import BEARER_CHALLENGE
from .schemas import FILES_PATH
from .tuning import Tuner
from .tuning_jobs import TuningJob
from .tuning_recipe import JobRequest

Authorization = Annotated[str | None, Header()]


def page(items: list[dict], after: str | None, limit: int) -> dict:
    """OpenAI's cursor page of `items` (already in their order): those after the one with id `after`."""
    ids = [item["id"] for item in items]
    start = ids.index(after) + 1 if after in ids else 0
    chosen = items[start : start + limit]
    return {"object": "list", "data": chosen, "has_more": start + limit < len(items)}


def tuning_routes(app: FastAPI, tuner: Tuner, admin_token: str | None, api_key: str | None) -> None:
    secrets = [secret for secret in (admin_token, api_key) if secret is not None]

    def writer(authorization: Authorization = None) -> None:
        """A dependency, so it answers before the body is read or checked: no schema details without the token."""
        if not secrets:
            raise HTTPException(403, "fine-tuning is off (start the server with --admin-token-file or --api-key-file)")
        if not any(bearer_matches(authorization, secret) for secret in secrets):
            raise HTTPException(401, "fine-tuning needs 'Authorization: Bearer <admin token or API key>'",
                                headers=BEARER_CHALLENGE)  # fmt: skip

    _file_routes(app, tuner, Depends(writer))
    _job_routes(app, tuner, Depends(writer))


def _file_routes(app: FastAPI, tuner: Tuner, writer) -> None:
    files = tuner.files

    @app.post(FILES_PATH, responses={400: {}, 401: {}, 403: {}, 413: {}}, dependencies=[writer])
    async def upload(request: Request) -> dict:
        """A fine-tuning file (multipart `file`, `purpose=fine-tune`), checked line by line before it is kept."""
        form = await request.form()
        upload = form.get("file")
        if not hasattr(upload, "read"):
            raise HTTPException(400, "file: a multipart file is required")
        data = await upload.read()
        try:
            stored = await asyncio.to_thread(files.create, upload.filename, str(form.get("purpose", "")), data)
        except SoftpromptError as exc:
            raise HTTPException(400, str(exc)) from None
        return stored.to_openai()

    @app.get(FILES_PATH)
    async def list_files(after: str | None = None, limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
                         order: str = "desc", purpose: str | None = None) -> dict:  # fmt: skip
        listed = [f.to_openai() for f in files.every() if purpose in (None, f.purpose)]
        return page(listed[::-1] if order == "desc" else listed, after, limit)

    @app.get("/v1/files/{file_id}", responses={404: {}})
    async def file(file_id: str) -> dict:
        stored = files.get(file_id)
        if stored is None:
            raise HTTPException(404, f"no file {file_id!r}")
        return stored.to_openai()

    @app.get("/v1/files/{file_id}/content", response_class=PlainTextResponse, responses={404: {}})
    async def content(file_id: str) -> PlainTextResponse:
        """The rows as stored: what a job trains on."""
        if files.get(file_id) is None:
            raise HTTPException(404, f"no file {file_id!r}")
        return PlainTextResponse(files.rows_path(file_id).read_text(), media_type="application/jsonl")

    @app.delete("/v1/files/{file_id}", responses={400: {}, 401: {}, 403: {}, 404: {}}, dependencies=[writer])
    async def delete_file(file_id: str) -> dict:
        try:
            deleted = await asyncio.to_thread(tuner.delete_file, file_id)
        except SoftpromptError as exc:
            raise HTTPException(400, str(exc)) from None
        if not deleted:
            raise HTTPException(404, f"no file {file_id!r}")
        return {"id": file_id, "object": "file", "deleted": True}


def _job_routes(app: FastAPI, tuner: Tuner, writer) -> None:
    jobs = tuner.jobs

    def job_or_404(job_id: str) -> TuningJob:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no fine-tuning job {job_id!r}")
        return job

    @app.post("/v1/fine_tuning/jobs", responses={400: {}, 401: {}, 403: {}}, dependencies=[writer])
    async def create(body: JobRequest) -> dict:
        """Check the job whole (files through its task, every row, the step limit), then queue it."""
        try:
            job = await asyncio.to_thread(tuner.create, body)
        except SoftpromptError as exc:
            raise HTTPException(400, str(exc)) from None
        return job.to_openai()

    @app.get("/v1/fine_tuning/jobs")
    async def list_jobs(after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict:
        return page([job.to_openai() for job in jobs.every()], after, limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}", responses={404: {}})
    async def retrieve(job_id: str) -> dict:
        return job_or_404(job_id).to_openai()

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel", responses={401: {}, 403: {}, 404: {}}, dependencies=[writer])
    async def cancel(job_id: str) -> dict:
        return (await asyncio.to_thread(tuner.cancel, job_or_404(job_id))).to_openai()

    @app.get("/v1/fine_tuning/jobs/{job_id}/events", responses={404: {}})
    async def events(job_id: str, after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20):
        job_or_404(job_id)
        return page(jobs.events(job_id), after, limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints", responses={404: {}})
    async def checkpoints(job_id: str, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 10):
        """The run's kept checkpoints (its newest two), newest first, each with its step's training loss."""
        job = job_or_404(job_id)
        losses = {e["data"]["step"]: e["data"]["train_loss"] for e in jobs.events(job_id)
                  if e.get("data") and "train_loss" in e["data"]}  # fmt: skip
        kept = sorted((jobs.run_folder(job_id) / "checkpoints").glob("step-*"), reverse=True)
        found = []
        for folder in kept:
            if not (folder / checkpoint.STATE_JSON).is_file():
                continue
            step = int(folder.name.removeprefix("step-"))
            found.append({"id": f"ftckpt-{job_id[6:]}{step:08d}", "object": "fine_tuning.job.checkpoint",
                          "created_at": int(folder.stat().st_mtime), "fine_tuning_job_id": job_id, "step_number": step,
                          "fine_tuned_model_checkpoint": f"{job.fine_tuned_model}:step-{step}",
                          "metrics": {"step": step, "train_loss": losses.get(step)}})  # fmt: skip
        return page(found, after, limit)
