//! The QA HTTP API and pages as a client sees them, on a server bound to a loopback port.

mod qa_support;

use std::sync::{Arc, Mutex};

use penumbra::qa::files;
use penumbra::qa::http::DecisionHook;
use penumbra::qa::store::{CaseRecord, Decision, QaStore};
use qa_support::{new_case, TestServer, DEPTH, HEIGHT, TOKEN, WIDTH};
use reqwest::blocking::Client;
use reqwest::header::{ACCEPT_LANGUAGE, AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn client() -> Client {
    Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client builds")
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn post_decision(server: &TestServer, id: i64, action: &str) -> reqwest::blocking::Response {
    client()
        .post(server.url(&format!("/api/cases/{id}/decision")))
        .header(AUTHORIZATION, bearer())
        .json(&json!({"action": action, "reviewer": "dr-api", "note": "checked"}))
        .send()
        .expect("request sent")
}

#[test]
fn missing_token_gets_401() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), None);

    let api = client().get(server.url("/api/cases")).send().expect("request sent");
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    let body: Value = api.json().expect("json body");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("token")), "{body}");

    let wrong = client().get(server.url("/api/cases")).header(AUTHORIZATION, "Bearer nope").send().expect("sent");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let page = client().get(server.url("/case/1")).send().expect("request sent");
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    let html = page.text().expect("html body");
    assert!(html.contains("<form method=\"post\" action=\"/login\""), "{html}");
    assert!(html.contains("value=\"/case/1\""), "login returns to the page asked for");

    let ok = client().get(server.url("/api/cases")).header(AUTHORIZATION, bearer()).send().expect("sent");
    assert_eq!(ok.status(), StatusCode::OK);
}

#[test]
fn login_form_sets_cookie() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), None);
    let id = server.store.enqueue(new_case("1.2.40.1", 0, 0)).expect("enqueue");

    let rejected = client()
        .post(server.url("/login"))
        .form(&[("token", "wrong-token"), ("name", "Dr Novak"), ("next", "/")])
        .send()
        .expect("sent");
    assert_eq!(rejected.status(), StatusCode::UNAUTHORIZED);
    assert!(rejected.headers().get(SET_COOKIE).is_none());

    let response = client()
        .post(server.url("/login"))
        .form(&[("token", TOKEN), ("name", "Dr Novak"), ("next", "/case/1")])
        .send()
        .expect("sent");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/case/1");
    let set_cookie = response.headers()[SET_COOKIE].to_str().expect("ascii cookie").to_owned();
    assert!(set_cookie.starts_with("penumbra_qa_session="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let session = set_cookie.split(';').next().expect("cookie pair").to_owned();

    let queue = client().get(server.url("/")).header(COOKIE, &session).send().expect("sent");
    assert_eq!(queue.status(), StatusCode::OK);
    assert!(queue.text().expect("html").contains("1.2.40.1"));

    let decided = client()
        .post(server.url(&format!("/api/cases/{id}/decision")))
        .header(COOKIE, &session)
        .json(&json!({"action": "accept"}))
        .send()
        .expect("sent");
    assert_eq!(decided.status(), StatusCode::OK);
    let audit: Value = client()
        .get(server.url(&format!("/api/cases/{id}/audit")))
        .header(COOKIE, &session)
        .send()
        .expect("sent")
        .json()
        .expect("json");
    assert_eq!(audit["entries"][1]["who"], "Dr Novak", "{audit}");

    let outside = client()
        .post(server.url("/login"))
        .form(&[("token", TOKEN), ("next", "//example.org/")])
        .send()
        .expect("sent");
    assert_eq!(outside.headers()[LOCATION], "/", "redirects never leave the site");

    let logout = client().post(server.url("/logout")).header(COOKIE, &session).send().expect("sent");
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    let after = client().get(server.url("/")).header(COOKIE, &session).send().expect("sent");
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED, "the session ends at logout");
}

#[test]
fn transitions_and_audit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), None);
    let id = server.store.enqueue(new_case("1.2.40.2", 0, 0)).expect("enqueue");

    let claimed = post_decision(&server, id, "claim");
    assert_eq!(claimed.status(), StatusCode::OK);
    assert_eq!(claimed.json::<Value>().expect("json")["state"], "in_review");

    let accepted = post_decision(&server, id, "accept_threshold");
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(accepted.json::<Value>().expect("json")["state"], "accepted_threshold");

    let again = post_decision(&server, id, "reject");
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let body: Value = again.json().expect("json");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("accepted_threshold")), "{body}");

    let unknown = post_decision(&server, id, "approve");
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let missing = post_decision(&server, 999, "accept");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let audit: Value = client()
        .get(server.url(&format!("/api/cases/{id}/audit")))
        .header(AUTHORIZATION, bearer())
        .send()
        .expect("sent")
        .json()
        .expect("json");
    let entries = audit["entries"].as_array().expect("entries array");
    let summary: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e["what"].as_str().unwrap_or(""), e["to_state"].as_str().unwrap_or(""), e["who"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("enqueue", "pending", "pipeline"),
            ("claim", "in_review", "dr-api"),
            ("accept_threshold", "accepted_threshold", "dr-api"),
        ]
    );
    assert_eq!(entries[2]["from_state"], "in_review");
    assert_eq!(entries[2]["note"], "checked");
}

#[test]
fn queue_lists_by_urgency() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), None);
    let low = server.store.enqueue(new_case("1.2.40.3", 0, 0)).expect("enqueue");
    let high = server.store.enqueue(new_case("1.2.40.4", 3, 30)).expect("enqueue");
    post_decision(&server, low, "reject");

    let all: Value = client()
        .get(server.url("/api/cases"))
        .header(AUTHORIZATION, bearer())
        .send()
        .expect("sent")
        .json()
        .expect("json");
    let pending: Value = client()
        .get(server.url("/api/cases?state=pending,in_review"))
        .header(AUTHORIZATION, bearer())
        .send()
        .expect("sent")
        .json()
        .expect("json");
    let bad = client().get(server.url("/api/cases?state=done")).header(AUTHORIZATION, bearer()).send().expect("sent");

    assert_eq!(all["cases"][0]["id"], high);
    assert_eq!(all["cases"][1]["id"], low);
    assert_eq!(pending["cases"].as_array().map(Vec::len), Some(1));
    assert_eq!(pending["cases"][0]["study_uid"], "1.2.40.4");
    assert_eq!(pending["cases"][0]["slices"], DEPTH);
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn corrected_mask_reaches_export() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), None);
    let id = server.store.enqueue(new_case("1.2.40.5", 0, 0)).expect("enqueue");

    // Slice 2 becomes: first row core, everything else background.
    let runs = json!([[2, WIDTH], [0, WIDTH * (HEIGHT - 1)]]);
    let put = client()
        .put(server.url(&format!("/api/cases/{id}/mask/2")))
        .header(AUTHORIZATION, bearer())
        .json(&json!({"width": WIDTH, "height": HEIGHT, "runs": runs}))
        .send()
        .expect("sent");
    assert_eq!(put.status(), StatusCode::NO_CONTENT);

    let labels: Value = client()
        .get(server.url(&format!("/api/cases/{id}/labels/2")))
        .header(AUTHORIZATION, bearer())
        .send()
        .expect("sent")
        .json()
        .expect("json");
    assert_eq!(labels["corrected"]["runs"], runs);

    assert_eq!(post_decision(&server, id, "correct").status(), StatusCode::OK);
    let accepted = server.store.enqueue(new_case("1.2.40.6", 0, 1)).expect("enqueue");
    assert_eq!(post_decision(&server, accepted, "accept").status(), StatusCode::OK);
    let rejected = server.store.enqueue(new_case("1.2.40.7", 0, 2)).expect("enqueue");
    assert_eq!(post_decision(&server, rejected, "reject").status(), StatusCode::OK);
    drop(server);

    let status = std::process::Command::new(env!("CARGO_BIN_EXE_penumbra"))
        .args(["qa", "export-labels", "--data-dir"])
        .arg(dir.path())
        .arg(out.path())
        .status()
        .expect("penumbra runs");
    assert!(status.success());

    let mut folders: Vec<String> = std::fs::read_dir(out.path())
        .expect("out dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders, vec![format!("1.2.40.5_{id}"), format!("1.2.40.6_{accepted}")], "rejected cases are left out");

    let folder = out.path().join(format!("1.2.40.5_{id}"));
    let mask = files::read_npy_u8(&folder.join("mask.npy")).expect("mask.npy reads");
    let unet = qa_support::synthetic_maps().unet_labels;
    assert_eq!(mask.dim(), (DEPTH, HEIGHT, WIDTH));
    assert!(mask.slice(ndarray::s![2, 0, ..]).iter().all(|&v| v == 2));
    assert!(mask.slice(ndarray::s![2, 1.., ..]).iter().all(|&v| v == 0));
    assert_eq!(mask.slice(ndarray::s![0..2, .., ..]), unet.slice(ndarray::s![0..2, .., ..]));
    assert!(folder.join("cbf.npy").exists());
    assert!(folder.join("tmax.npy").exists());

    let meta: Value = serde_json::from_str(&std::fs::read_to_string(folder.join("meta.json")).expect("meta.json"))
        .expect("meta json");
    assert_eq!(meta["decision"], "corrected");
    assert_eq!(meta["reviewer"], "dr-api");
    assert_eq!(meta["model_version"], "unet-test-1");
    assert!(meta["decided_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{meta}");

    let accepted_mask = files::read_npy_u8(&out.path().join(format!("1.2.40.6_{accepted}/mask.npy"))).expect("reads");
    assert_eq!(accepted_mask, unet, "accepted cases export the U-Net labels");
}

#[test]
fn invalid_mask_is_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), None);
    let id = server.store.enqueue(new_case("1.2.40.8", 0, 0)).expect("enqueue");
    let put = |body: Value, slice: usize| {
        client()
            .put(server.url(&format!("/api/cases/{id}/mask/{slice}")))
            .header(AUTHORIZATION, bearer())
            .json(&body)
            .send()
            .expect("sent")
            .status()
    };

    assert_eq!(put(json!({"width": WIDTH, "height": HEIGHT, "runs": [[3, WIDTH * HEIGHT]]}), 0), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(put(json!({"width": WIDTH, "height": HEIGHT, "runs": [[1, 5]]}), 0), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(put(json!({"width": WIDTH, "height": HEIGHT, "runs": [[0, WIDTH * HEIGHT]]}), DEPTH), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(put(json!({"width": 4, "height": 4, "runs": [[0, 16]]}), 0), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(put(json!({"rows": []}), 0), StatusCode::BAD_REQUEST);
    assert!(!server.store.get(id).expect("get").has_correction);

    let correct = post_decision(&server, id, "correct");
    assert_eq!(correct.status(), StatusCode::CONFLICT, "no mask was saved");
}

#[test]
fn pages_follow_language() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), None);
    server.store.enqueue(new_case("1.2.40.9", 0, 0)).expect("enqueue");

    let czech = client()
        .get(server.url("/"))
        .header(AUTHORIZATION, bearer())
        .header(ACCEPT_LANGUAGE, "cs-CZ,cs;q=0.9,en;q=0.5")
        .send()
        .expect("sent")
        .text()
        .expect("html");
    assert!(czech.contains("<html lang=\"cs\">"));
    assert!(czech.contains("Fronta k revizi"));
    assert!(czech.contains("Spolehlivost"));
    assert!(czech.contains("<td>0,42</td>"), "Czech numbers use a decimal comma");
    assert!(czech.contains("<td>12,5</td>"));

    let switched = client()
        .get(server.url("/?lang=en"))
        .header(AUTHORIZATION, bearer())
        .header(ACCEPT_LANGUAGE, "cs")
        .send()
        .expect("sent");
    let cookie = switched.headers()[SET_COOKIE].to_str().expect("ascii").to_owned();
    assert!(cookie.starts_with("penumbra_qa_lang=en"), "{cookie}");
    let english = switched.text().expect("html");
    assert!(english.contains("<html lang=\"en\">"));
    assert!(english.contains("Review queue"));
    assert!(english.contains("<td>0.42</td>"));

    let remembered = client()
        .get(server.url("/case/1"))
        .header(AUTHORIZATION, bearer())
        .header(ACCEPT_LANGUAGE, "en")
        .header(COOKIE, "penumbra_qa_lang=cs")
        .send()
        .expect("sent")
        .text()
        .expect("html");
    assert!(remembered.contains("<html lang=\"cs\">"));
    assert!(remembered.contains("Opravit masku"), "the case page carries the Czech table for its script");
}

#[test]
fn slice_images_are_png() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), None);
    let id = server.store.enqueue(new_case("1.2.40.10", 0, 0)).expect("enqueue");

    let image = client()
        .get(server.url(&format!("/api/cases/{id}/image/cbf/1")))
        .header(AUTHORIZATION, bearer())
        .send()
        .expect("sent");
    assert_eq!(image.status(), StatusCode::OK);
    assert_eq!(image.headers()[CONTENT_TYPE], "image/png");
    assert!(image.bytes().expect("bytes").starts_with(b"\x89PNG"));

    let unknown = client().get(server.url(&format!("/api/cases/{id}/image/cbv/1"))).header(AUTHORIZATION, bearer()).send();
    assert_eq!(unknown.expect("sent").status(), StatusCode::NOT_FOUND);
    let out_of_range = client().get(server.url(&format!("/api/cases/{id}/image/tmax/{DEPTH}"))).header(AUTHORIZATION, bearer()).send();
    assert_eq!(out_of_range.expect("sent").status(), StatusCode::UNPROCESSABLE_ENTITY);
}

struct RecordingHook(Mutex<Vec<(i64, String)>>);

impl DecisionHook for RecordingHook {
    fn on_decision(&self, case: &CaseRecord, decision: &Decision) {
        self.0.lock().expect("lock").push((case.id, format!("{}:{}", decision.action, case.state)));
    }
}

#[test]
fn decision_hook_sees_final_decisions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hook = Arc::new(RecordingHook(Mutex::new(Vec::new())));
    let server = TestServer::start(dir.path(), Some(hook.clone()));
    let id = server.store.enqueue(new_case("1.2.40.11", 0, 0)).expect("enqueue");

    post_decision(&server, id, "claim");
    post_decision(&server, id, "release");
    post_decision(&server, id, "accept");
    post_decision(&server, id, "reject");

    let calls = hook.0.lock().expect("lock").clone();
    assert_eq!(calls, vec![(id, "accept:accepted".to_owned())], "claim, release and the refused reject do not call it");
}

/// A child process killed on drop, so a failed assert does not leave a server running.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_standalone_uses_token_file() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = penumbra::qa::store::SqliteQaStore::open(dir.path()).expect("store opens");
        store.enqueue(new_case("1.2.40.12", 0, 0)).expect("enqueue");
    }
    let token_file = dir.path().join("qa.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token written");

    let child = std::process::Command::new(env!("CARGO_BIN_EXE_penumbra"))
        .args(["qa", "serve-standalone", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--token-file")
        .arg(&token_file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("penumbra starts");
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().expect("stdout piped");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("first line");
    let base = line.trim().strip_prefix("penumbra qa: listening on ").expect("listening line").trim_end_matches('/').to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");

    let cases: Value = client()
        .get(format!("{base}/api/cases"))
        .header(AUTHORIZATION, bearer())
        .send()
        .expect("sent")
        .json()
        .expect("json");
    assert_eq!(cases["cases"][0]["study_uid"], "1.2.40.12");
    let anonymous = client().get(format!("{base}/api/cases")).send().expect("sent");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn short_token_is_a_config_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("qa.token");
    std::fs::write(&token_file, "short\n").expect("token written");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_penumbra"))
        .args(["qa", "serve-standalone", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .expect("penumbra runs");

    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least 16"), "{stderr}");
}

/// Returns the Python of the repository's `.venv`, or of the shared one when the repository has none.
fn venv_python() -> std::path::PathBuf {
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if local.exists() {
        local
    } else {
        std::path::PathBuf::from("/work/main/.venv/bin/python")
    }
}

#[test]
fn exported_files_load_in_numpy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), None);
    let id = server.store.enqueue(new_case("1.2.40.13", 0, 0)).expect("enqueue");
    assert_eq!(post_decision(&server, id, "accept_threshold").status(), StatusCode::OK);
    drop(server);
    let store = penumbra::qa::store::SqliteQaStore::open(dir.path()).expect("store opens");
    assert_eq!(penumbra::qa::export::export_labels(&store, out.path()).expect("export").exported, 1);

    // NumPy reads the files on its own; the expected numbers come from the synthetic maps:
    // threshold disks shifted 2 voxels right (core at (16, 22)), and CBF = 20 + x + 5 z outside
    // the lesion row, so cbf[2, 0, 39] = 20 + 39 + 10 = 69.
    let folder = out.path().join(format!("1.2.40.13_{id}"));
    let script = "import numpy, sys\n\
        m = numpy.load(sys.argv[1] + '/mask.npy')\n\
        c = numpy.load(sys.argv[1] + '/cbf.npy')\n\
        t = numpy.load(sys.argv[1] + '/tmax.npy')\n\
        print(m.dtype, m.shape, int(m[1, 16, 22]), int(m[1, 16, 13]), c.dtype, c.shape, float(c[2, 0, 39]), float(t[0, 16, 20]))";
    let output = std::process::Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .arg(&folder)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python failed: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout.trim(), "uint8 (3, 32, 40) 2 0 float32 (3, 32, 40) 69.0 14.0");
}

#[test]
fn malformed_paths_get_json_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(dir.path(), None);

    let bad_id = client().get(server.url("/api/cases/abc")).header(AUTHORIZATION, bearer()).send().expect("sent");
    assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad_id.json().expect("json body");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("abc")), "{body}");

    let unknown = client().get(server.url("/api/studies")).header(AUTHORIZATION, bearer()).send().expect("sent");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body: Value = unknown.json().expect("json body");
    assert!(body["error"].is_string(), "{body}");
}
