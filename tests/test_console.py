"""The web console in a real browser (headless Chromium from the system, driven by Selenium with the system
chromedriver; nothing is downloaded): tasks listed, the label shown equals the API's, errors shown as their one
line, admin upload and delete from the page, and the Jobs panel (a file uploaded, a job started, watched to its
end, its task used; a job cancelled). And the shipped page names no external URL, so it works offline."""

from __future__ import annotations

import re
import shutil

import pytest

from softprompt.data.tasks import Task
from softprompt.models.base import Base
from softprompt.models.prompt import init_prompt
from softprompt.prompts.record import FolderRecord
from softprompt.prompts.tuned import TunedPrompt
from softprompt.serve.app import CONSOLE

from .serving import TASKS, call, running_server, zip_folder

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no Chromium here: apt-get install chromium chromium-driver (.ci/run installs them where apt answers)",
)
TOKEN = "console-admin-token-0123456789"
INPUTS = ["a gripping, beautifully acted film", "the worst two hours I have spent in a cinema"]
QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?"]


def test_shipped_console_names_no_external_url():
    files = sorted(CONSOLE.iterdir())
    assert {f.name for f in files} == {"index.html", "console.css", "console.js", "jobs.js"}
    for file in files:
        text = file.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f"{file.name} names an external URL"
        assert "@import" not in text and "cdn" not in text.lower()
    sources = re.findall(r'(?:src|href)="([^"]+)"', (CONSOLE / "index.html").read_text())
    assert sources and all(s.startswith("console/") for s in sources)


ANSWER = Task("Question: {question}\nAnswer:", target_field="answer", max_new_tokens=8)  # a text-to-text task
SERVED = ["answer", "sentiment", "tweets"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, smollm2):
    """Three served tasks (one of them text to text), and a fourth folder to upload from the page."""
    model, tokenizer = smollm2
    root = tmp_path_factory.mktemp("console")
    for seed, name in enumerate(("tweets", "sentiment", "topic", "answer")):
        task, n_tokens = TASKS[name] if name in TASKS else (ANSWER, 4)
        prompt = init_prompt(n_tokens, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=seed)
        folder = root / ("upload" if name == "topic" else "prompts") / name
        tuned = TunedPrompt.build(Base(model, tokenizer), prompt, task, record=FolderRecord(init="sampled-vocab"))
        tuned.save_pretrained(folder)
    (root / "topic.zip").write_bytes(zip_folder(root / "upload" / "topic"))
    (root / "broken.zip").write_bytes(b"not a zip archive")
    (root / "token").write_text(TOKEN)
    return root


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def _task_names(driver) -> list[str]:
    """Read in one script, as the table may be redrawn between two calls."""
    return driver.execute_script("return [...document.querySelectorAll('#tasks tbody tr')].map(r => r.dataset.task)")


@needs_browser
def test_console_in_a_real_browser(folders, browser, tmp_path):
    from selenium.webdriver.support.ui import Select

    args = ("--admin-token-file", str(folders / "token"), "--max-input-tokens", "24")
    with running_server("smollm2-135m", folders / "prompts", *args) as url:
        browser.get(url + "/")
        _wait(browser, lambda d: sorted(_task_names(d)) == SERVED)

        # Try: the labels shown are the API's for the same inputs.
        Select(browser.find_element("id", "task")).select_by_value("sentiment")
        box = browser.find_element("id", "inputs")
        box.clear()
        box.send_keys("\n".join(INPUTS))
        browser.find_element("id", "predict").click()
        _wait(browser, lambda d: len(d.find_elements("css selector", "#results .result")) == len(INPUTS))
        shown = [r.get_attribute("data-label") for r in browser.find_elements("css selector", "#results .result")]
        status, answer, _ = call(url + "/v1/classify", "POST", {"task": "sentiment", "inputs": INPUTS})
        assert status == 200 and shown == answer["labels"]
        bars = browser.find_elements("css selector", "#results .result .bar")
        assert len(bars) == len(INPUTS) * 2  # one bar per label
        browser.save_screenshot(str(tmp_path / "console.png"))
        assert (tmp_path / "console.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # A text-to-text task: the generated text, the API's, instead of label bars.
        Select(browser.find_element("id", "task")).select_by_value("answer")
        box.clear()
        box.send_keys("\n".join(QUESTIONS))
        browser.find_element("id", "predict").click()
        _wait(browser, lambda d: len(d.find_elements("css selector", "#results .result pre.prediction")) == 2)
        shown = [r.text for r in browser.find_elements("css selector", "#results .result pre.prediction")]
        status, answer, _ = call(url + "/v1/predict", "POST", {"task": "answer", "rows": QUESTIONS})
        assert status == 200 and shown == [output["text"] for output in answer["outputs"]] and any(shown)
        assert not browser.find_elements("css selector", "#results .result .bar")

        # A bad input shows the API's one-line error.
        long_input = " ".join(["word"] * 40)
        box.clear()
        box.send_keys(long_input)
        browser.find_element("id", "predict").click()
        error = _wait(browser, lambda d: d.find_element("id", "error").is_displayed() and d.find_element("id", "error"))
        status, refused, _ = call(url + "/v1/predict", "POST", {"task": "answer", "rows": [long_input]})
        assert status == 422 and error.text == refused["error"]

        # Admin, shown with a token: a broken upload shows its error line; a good one adds the task; delete.
        assert not browser.find_element("id", "admin").is_displayed()
        browser.find_element("id", "admin-token").send_keys(TOKEN)
        _wait(browser, lambda d: d.find_element("id", "admin").is_displayed())
        browser.find_element("id", "upload-name").send_keys("topic")
        upload = browser.find_element("id", "upload-file")
        upload.send_keys(str(folders / "broken.zip"))
        browser.find_element("css selector", "#upload-form button").click()
        status_line = browser.find_element("id", "admin-status")
        _wait(browser, lambda d: "error" in status_line.get_attribute("class"))
        assert status_line.text and "\n" not in status_line.text
        upload.clear()
        upload.send_keys(str(folders / "topic.zip"))
        browser.find_element("css selector", "#upload-form button").click()
        _wait(browser, lambda d: "topic" in _task_names(d))
        assert status_line.text.startswith("uploaded topic (prompt version ")
        assert call(url + "/v1/classify", "POST", {"task": "topic", "inputs": INPUTS})[0] == 200
        browser.save_screenshot(str(tmp_path / "console-admin.png"))
        Select(browser.find_element("id", "delete-name")).select_by_value("topic")
        browser.find_element("css selector", "#delete-form button").click()
        _wait(browser, lambda d: "topic" not in _task_names(d))
        assert call(url + "/v1/classify", "POST", {"task": "topic", "inputs": INPUTS})[0] == 404

        # Live: the figures come from /metrics.
        _wait(browser, lambda d: d.find_element("id", "rps").text not in ("", "-"), timeout=20)
        hits = browser.find_element("id", "cache-hits").text
        assert hits.isdigit()


@needs_browser
def test_console_asks_for_the_api_key(folders, browser, tmp_path):
    """With an API key the page still loads, asks for the key, and lists the tasks once it is given."""
    key = "console-api-key-abcdefghijklmnop"
    (tmp_path / "key").write_text(key)
    auth = {"Authorization": f"Bearer {key}"}
    with running_server(
        "smollm2-135m", folders / "prompts", "--api-key-file", str(tmp_path / "key"), headers=auth
    ) as url:
        browser.get(url + "/")
        browser.execute_script("sessionStorage.clear()")
        browser.get(url + "/")
        _wait(browser, lambda d: d.find_element("id", "key-form").is_displayed())
        assert _task_names(browser) == []
        assert "Bearer" in browser.find_element("id", "error").text
        browser.find_element("id", "api-key").send_keys(key)
        browser.find_element("css selector", "#key-form button").click()
        _wait(browser, lambda d: sorted(_task_names(d)) == SERVED)
        assert not browser.find_element("id", "error").is_displayed()


def _job_cells(driver, job_id: str) -> list[str]:
    """A job row's cells, read in one script: the table is redrawn every 2 s."""
    return driver.execute_script("const r = document.querySelector(`#jobs tbody tr[data-job='${arguments[0]}']`);"
                                 "return r ? [...r.cells].map(c => c.textContent) : [];", job_id)  # fmt: skip


def _click_in_row(driver, job_id: str) -> bool:
    """Click the job row's button (cancel or use) in one script; False while the row has none."""
    return driver.execute_script("const b = document.querySelector(`#jobs tbody tr[data-job='${arguments[0]}'] "
                                 "button`); if (b) b.click(); return Boolean(b);", job_id)  # fmt: skip


@needs_browser
def test_console_jobs_panel_trains_a_task_and_cancels_a_job(folders, browser, data_dir, tmp_path):
    from .test_tuning_service import _jsonl, _tweets

    rows = tmp_path / "tweets.jsonl"
    rows.write_bytes(_jsonl(_tweets(data_dir, 16)))
    recipe = '{"template": "Tweet text : {text} Label : ", "label_field": "label", "num_virtual_tokens": 4}'
    with running_server("smollm2-135m", folders / "prompts", "--admin-token-file", str(folders / "token")) as url:
        browser.get(url + "/")
        _wait(browser, lambda d: sorted(_task_names(d)) == SERVED)
        browser.find_element("id", "admin-token").send_keys(TOKEN)
        browser.find_element("id", "job-file").send_keys(str(rows))
        browser.find_element("css selector", "#file-form button").click()
        status = browser.find_element("id", "jobs-status")
        _wait(browser, lambda d: status.text.startswith("uploaded tweets.jsonl: file-"))
        chosen = browser.execute_script("return document.querySelector('#job-training').value")  # options redrawn
        assert chosen == status.text.split(": ")[1].split(" ")[0]
        _wait(browser, lambda d: d.find_element("id", "job-model").get_attribute("value"))
        for field, value in (("job-suffix", "panel"), ("job-recipe", recipe)):
            browser.find_element("id", field).send_keys(value)
        epochs = browser.find_element("id", "job-epochs")
        epochs.clear()
        epochs.send_keys("1")
        browser.find_element("css selector", "#job-form button").click()
        _wait(browser, lambda d: status.text.startswith("started ftjob-"))
        job_id = status.text.split(" ")[1].rstrip(":")
        _wait(browser, lambda d: _job_cells(d, job_id)[1:2] == ["succeeded"], timeout=180)
        job = call(f"{url}/v1/fine_tuning/jobs/{job_id}")[1]
        cells = _job_cells(browser, job_id)
        assert cells[2] == "2 / 2" and cells[4] == job["fine_tuned_model"]
        _wait(browser, lambda d: d.find_element("id", "job-events").text.startswith("Published"))
        assert browser.find_element("css selector", "#job-curve polyline").get_attribute("points").count(",") == 2
        _click_in_row(browser, job_id)  # use
        _wait(browser, lambda d: job["fine_tuned_model"] in _task_names(d))
        _wait(browser, lambda d: d.execute_script("return document.querySelector('#task').value")
              == job["fine_tuned_model"])  # fmt: skip
        browser.save_screenshot(str(tmp_path / "console-jobs.png"))

        epochs.clear()
        epochs.send_keys("40")
        browser.find_element("css selector", "#job-form button").click()
        _wait(browser, lambda d: status.text.startswith("started ftjob-") and job_id not in status.text)
        long_id = status.text.split(" ")[1].rstrip(":")
        _wait(browser, lambda d: _click_in_row(d, long_id))  # cancel
        _wait(browser, lambda d: status.text.startswith(long_id))
        _wait(browser, lambda d: call(f"{url}/v1/fine_tuning/jobs/{long_id}")[1]["status"] == "cancelled")
