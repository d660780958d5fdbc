//! The QA page in headless Chromium, driven over WebDriver through chromedriver.
//!
//! The test signs in, opens a queued case, paints a correction, saves it and sees the case leave
//! the queue. Then it accepts a second case on the Czech screen with the keyboard. Screenshots go
//! to `target/test-output/qa/`.

mod qa_support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use penumbra::qa::files::MaskKind;
use penumbra::qa::store::{CaseState, QaStore};
use qa_support::{new_case, TestServer, TOKEN};
use reqwest::blocking::Client;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const WAIT: Duration = Duration::from_secs(15);

/// A chromedriver process on a loopback port, killed on drop.
struct Driver {
    child: Child,
    base: String,
}

impl Driver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("address").port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Self { child, base: format!("http://127.0.0.1:{port}") };

        let client = Client::new();
        let deadline = Instant::now() + WAIT;
        while client.get(format!("{}/status", driver.base)).send().map(|r| !r.status().is_success()).unwrap_or(true) {
            assert!(Instant::now() < deadline, "chromedriver did not answer /status within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session: the few W3C commands this test needs.
struct Session {
    client: Client,
    url: String,
    _profile: tempfile::TempDir,
}

impl Session {
    fn new(driver: &Driver) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1280,1000".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let client = Client::builder().timeout(Duration::from_secs(30)).build().expect("client builds");
        let response: Value = client
            .post(format!("{}/session", driver.base))
            .json(&capabilities)
            .send()
            .expect("new session request")
            .json()
            .expect("new session json");
        let id = response["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {response}")).to_owned();
        Self { client, url: format!("{}/session/{id}", driver.base), _profile: profile }
    }

    fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request.send().expect("webdriver request").json().expect("webdriver json");
        if let Some(error) = response["value"]["error"].as_str() {
            panic!("webdriver {path} failed: {error}: {}", response["value"]["message"]);
        }
        response["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})));
    }

    fn find(&self, css: &str) -> String {
        let value = self.command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})));
        value[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("no element for {css}: {value}")).to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.command(reqwest::Method::POST, &format!("/element/{element}/value"), Some(json!({"text": text})));
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.command(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({})));
    }

    fn script(&self, script: &str) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []})))
    }

    fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + WAIT;
        while self.script(script) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Presses one key. Special keys use the WebDriver code points, e.g. `\u{E014}` for ArrowRight.
    fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key},
        ]}]});
        self.command(reqwest::Method::POST, "/actions", Some(actions));
    }

    /// Drags the mouse across an element, with offsets in CSS pixels from its centre.
    fn drag(&self, css: &str, points: &[(i64, i64)]) {
        let element = self.find(css);
        let origin = json!({ELEMENT_KEY: element});
        let mut steps = vec![json!({"type": "pointerMove", "origin": origin, "x": points[0].0, "y": points[0].1, "duration": 0})];
        steps.push(json!({"type": "pointerDown", "button": 0}));
        for &(x, y) in &points[1..] {
            steps.push(json!({"type": "pointerMove", "origin": origin, "x": x, "y": y, "duration": 20}));
        }
        steps.push(json!({"type": "pointerUp", "button": 0}));
        let actions = json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": steps}]});
        self.command(reqwest::Method::POST, "/actions", Some(actions));
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.command(reqwest::Method::GET, "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 screenshot"))
            .expect("screenshot decodes");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-output/qa");
        std::fs::create_dir_all(&dir).expect("output dir");
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("screenshot written");
        path
    }

    fn close(&self) {
        let _ = self.client.delete(&self.url).send();
    }
}

const CANVAS_DRAWN: &str = "const c = document.getElementById('canvas-cbf'); \
    if (!c || !document.getElementById('slice-label').textContent) return false; \
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
    return d.some((v, i) => i % 4 !== 3 && v > 0);";

#[test]
fn browser_corrects_and_accepts() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), None);
    let corrected_id = server.store.enqueue(new_case("1.2.826.0.1.3680043.9.1", 2, 0)).expect("enqueue");
    let accepted_id = server.store.enqueue(new_case("1.2.826.0.1.3680043.9.2", 1, 5)).expect("enqueue");

    let driver = Driver::start();
    let session = Session::new(&driver);

    session.goto(&server.url("/"));
    session.type_into("#token", TOKEN);
    session.type_into("#name", "Dr Dvořák");
    session.click("#login");
    session.wait_for("the queue after login", "return document.querySelectorAll('tr.case').length === 2;");
    session.screenshot("queue.png");

    session.click(&format!("tr.case[data-case-id='{corrected_id}'] a"));
    session.wait_for("the case canvas", CANVAS_DRAWN);

    // The canvas is 40 x 32 voxels at 9 CSS pixels each; the stroke runs along voxel row 2, far
    // from the lesion in the centre, from x = 3 to x = 13.
    session.press("b");
    session.wait_for("the brush", "return document.getElementById('tool-brush').classList.contains('active');");
    session.drag("#canvas-cbf", &[(-150, -120), (-120, -120), (-90, -120), (-60, -120)]);

    // The eraser clears the U-Net core around the centre voxel (16, 20) on the Tmax canvas.
    session.press("e");
    session.wait_for("the eraser", "return document.getElementById('tool-eraser').classList.contains('active');");
    session.drag("#canvas-tmax", &[(4, 4), (5, 5)]);

    session.press("\u{E014}");
    session.wait_for("the next slice", "return document.getElementById('slice-label').textContent === 'Slice 3 / 3';");
    session.press("\u{E012}");
    session.wait_for("the edited slice", "return document.getElementById('slice-label').textContent === 'Slice 2 / 3';");
    session.wait_for("the edited slice drawn", CANVAS_DRAWN);
    let correction_shot = session.screenshot("case-correction.png");

    session.press("s");
    session.wait_for(
        "the queue without the corrected case",
        &format!(
            "return location.pathname === '/' && document.querySelectorAll('tr.case').length === 1 \
             && !document.querySelector(\"tr.case[data-case-id='{corrected_id}']\");"
        ),
    );

    let case = server.store.get(corrected_id).expect("case");
    assert_eq!(case.state, CaseState::Corrected);
    let mask = server.store.mask(corrected_id, MaskKind::Corrected).expect("read").expect("corrected mask saved");
    let middle = qa_support::DEPTH / 2;
    let painted: Vec<u8> = (3..=13).map(|x| mask[(middle, 2, x)]).collect();
    assert!(painted.iter().all(|&v| v == 2), "row 2 of slice {middle} is painted core: {painted:?}");
    assert_eq!(mask[(middle, 30, 35)], 0, "far from the stroke stays background");
    assert_eq!(mask[(middle, 16, 20)], 0, "the eraser cleared the core centre");
    assert_eq!(mask[(middle, 16, 16)], 2, "core outside the eraser stays");
    let audit = server.store.audit(corrected_id).expect("audit");
    assert!(audit.iter().any(|e| e.what == "correct" && e.who == "Dr Dvořák"), "{audit:?}");

    session.goto(&server.url(&format!("/case/{accepted_id}?lang=cs")));
    session.wait_for("the Czech case page", CANVAS_DRAWN);
    let czech = session.script("return document.documentElement.lang + '|' + document.getElementById('accept').textContent;");
    assert_eq!(czech, json!("cs|Přijmout (A)"));
    let czech_shot = session.screenshot("case-cs.png");
    session.press("a");
    session.wait_for("the empty queue", "return location.pathname === '/' && document.querySelectorAll('tr.case').length === 0;");
    assert_eq!(server.store.get(accepted_id).expect("case").state, CaseState::Accepted);
    session.screenshot("queue-empty-cs.png");
    session.close();

    for shot in [correction_shot, czech_shot] {
        assert!(std::fs::metadata(&shot).expect("screenshot exists").len() > 1000, "{}", shot.display());
    }
    assert!(started.elapsed() < Duration::from_secs(60), "browser test took {:?}", started.elapsed());
}
