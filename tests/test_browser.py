"""The explorers clicked in a real browser: JupyterLab headless on localhost, driven through Chromium by selenium.

Needs Debian's `chromium` and `chromium-driver` and the `browser` extra (`pip install -e ".[dev,browser]"`); skipped,
with the reason, where any of them is missing. It saves a screenshot of each explorer in the test's folder (and, with
`FINETUNE_BOOK_SCREENSHOTS=nbs/images`, where the docs pages show them as static pictures).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
missing = [what for what, ok in (("Debian's chromium", CHROMIUM), ("chromium-driver", DRIVER)) if not ok]
for module in ("selenium", "jupyterlab"):
    try: __import__(module)
    except ImportError: missing.append(f"the {module} package")
if missing: pytest.skip(f"no browser test here: {', '.join(missing)} not installed "
                        "(apt-get install chromium chromium-driver; pip install -e '.[browser]')", allow_module_level=True)

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

EXPLAIN_CELL = """from transformers.utils import logging
from finetune_book.data import TWEET_LABELS, load_splits
from finetune_book.explain import explain_plan, explorer
logging.disable_progress_bar()  # no "Loading weights" bar: the page holds only the explorer
run = explain_plan("test").fine_tune(load_splits("tweets", "test")["train"], list(TWEET_LABELS))  # the chapter's model
explorer(run.model, run.tokenizer, text="the flight was fine", n_steps=8)"""


REVIEW_CELL = """from finetune_book.data import load_tweets, sample_rows
from finetune_book.data_quality import audit, review_widget
report = audit(sample_rows(load_tweets(), 300, seed=0), seed=0)
review_widget(report)"""
RESULT = ".widget-vbox > .widget-html"  # the explorer's own output, below its text box, menu and button


def notebook(path:Path, source:str):
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "execution_count": None, "id": "explorer",
                                           "metadata": {}, "outputs": [], "source": source}],
                                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}},
                                "nbformat": 4, "nbformat_minor": 5}))


def free_port()->int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "JupyterLab on localhost, headless, with its app object exposed to the page for `run-all-cells`."
    root = tmp_path_factory.mktemp("lab")
    notebook(root / "explorer.ipynb", EXPLAIN_CELL)
    notebook(root / "review.ipynb", REVIEW_CELL)
    port, token = free_port(), "finetune-book-test"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JUPYTER_CONFIG_DIR": str(root / ".jupyter")}
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                             "--expose-app-in-browser", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
                             "jupyterlab.NeverCheckForUpdate", *(["--allow-root"] if os.geteuid() == 0 else [])],
                            cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(root / "lab.log", "w"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        if proc.poll() is not None: break  # it exited: say why, below
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError: time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
    yield url, token, root
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    yield driver
    driver.quit()


def screenshot(driver, element, name:str, folder:Path)->Path:
    out = folder / name
    element.screenshot(str(out))
    if os.environ.get("FINETUNE_BOOK_SCREENSHOTS"):
        shutil.copy(out, Path(os.environ["FINETUNE_BOOK_SCREENSHOTS"]) / name)
    return out


def run_all(browser, url:str, token:str, name:str)->WebDriverWait:
    "Open notebook `name` in JupyterLab, wait for its kernel, and run all its cells, as Run > Run All Cells does."
    browser.get(f"{url}/lab/workspaces/{name.split('.')[0]}/tree/{name}?reset&token={token}")  # this notebook alone
    wait = WebDriverWait(browser, 300)
    wait.until(lambda d: d.execute_script(
        "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        "return !!(w && w.context && w.context.path === arguments[0] && w.sessionContext.session"
        " && w.sessionContext.session.kernel)", name))
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    return wait


def test_explorer_highlights_the_tokens_of_a_typed_text(lab, browser):
    url, token, root = lab
    wait = run_all(browser, url, token, "explorer.ipynb")
    box = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".widget-text input")))
    first = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, RESULT + " span[title]")))
    assert "fine" in browser.find_element(By.CSS_SELECTOR, RESULT).text
    box.clear()
    box.send_keys("the crew was wonderful")
    browser.find_element(By.XPATH, "//button[contains(., 'Explain')]").click()
    wait.until(lambda d: "wonderful" in d.find_element(By.CSS_SELECTOR, RESULT).text)
    spans = browser.find_elements(By.CSS_SELECTOR, RESULT + " span[title]")
    words = [s.text.strip() for s in spans]
    assert words.index("crew") < words.index("wonderful") and "fine" not in words  # the typed text, token by token
    assert all(s.get_attribute("title")[0] in "+-" for s in spans)  # each carries its score
    assert any("rgba" in s.get_attribute("style") for s in spans)   # shaded by it
    widget = browser.find_element(By.CSS_SELECTOR, ".jupyter-widgets.widget-vbox")
    assert screenshot(browser, widget, "explain_explorer.png", root).stat().st_size > 1000


def test_review_widget_moves_to_the_next_row_on_a_decision(lab, browser):
    url, token, root = lab
    wait = run_all(browser, url, token, "review.ipynb")
    readout = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".widget-hslider .widget-readout")))
    shown = browser.find_element(By.CSS_SELECTOR, ".widget-vbox > .widget-html b")
    first_row, first_readout = shown.text, readout.text
    assert first_row.startswith("row ") and first_readout == "0"
    browser.find_element(By.XPATH, "//button[contains(., 'relabel')]").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".widget-hslider .widget-readout").text == "1")
    assert browser.find_element(By.CSS_SELECTOR, ".widget-vbox > .widget-html b").text != first_row  # the next row
    widget = browser.find_element(By.CSS_SELECTOR, ".jupyter-widgets.widget-vbox")
    assert screenshot(browser, widget, "review_widget.png", root).stat().st_size > 1000
