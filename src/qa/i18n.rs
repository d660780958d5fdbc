//! Every string of the QA screens, one table per language.
//!
//! The server renders the queue and login pages from these tables and hands the table to the case
//! page's script as JSON, so no UI text lives anywhere else.

use serde::Serialize;

/// A supported UI language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    En,
    Cs,
}

impl Language {
    /// Parses a language code such as `cs` or `cs-CZ`, ignoring case and region.
    pub fn parse(code: &str) -> Option<Self> {
        let primary = code.trim().split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Self::En),
            "cs" => Some(Self::Cs),
            _ => None,
        }
    }

    /// Returns the code for `<html lang>` and the language cookie.
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Cs => "cs",
        }
    }

    /// Returns this language's string table.
    pub fn strings(self) -> &'static Strings {
        match self {
            Self::En => &EN,
            Self::Cs => &CS,
        }
    }
}

/// Picks the first language of an `Accept-Language` header, by quality, that `offered` contains.
pub fn from_accept_language(header: &str, offered: &[Language]) -> Option<Language> {
    let mut candidates: Vec<(f32, usize, Language)> = Vec::new();
    for (position, part) in header.split(',').enumerate() {
        let mut pieces = part.split(';');
        let code = pieces.next().unwrap_or("");
        let quality = pieces
            .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
            .unwrap_or(1.0);
        if let Some(language) = Language::parse(code).filter(|l| offered.contains(l)) {
            if quality > 0.0 {
                candidates.push((quality, position, language));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    candidates.first().map(|c| c.2)
}

/// All UI strings of one language.
#[derive(Debug, Serialize)]
pub struct Strings {
    pub title: &'static str,
    pub queue_title: &'static str,
    pub queue_empty: &'static str,
    pub show_all: &'static str,
    pub show_pending: &'static str,
    pub study_uid: &'static str,
    pub arrival: &'static str,
    pub urgency: &'static str,
    pub state: &'static str,
    pub confidence: &'static str,
    pub not_assessable: &'static str,
    pub core: &'static str,
    pub penumbra: &'static str,
    pub hypoperfused: &'static str,
    pub unet: &'static str,
    pub threshold: &'static str,
    pub volumes: &'static str,
    pub components: &'static str,
    pub reasons: &'static str,
    pub model_version: &'static str,
    pub slice: &'static str,
    pub accept: &'static str,
    pub reject: &'static str,
    pub accept_threshold: &'static str,
    pub correct_mask: &'static str,
    pub brush: &'static str,
    pub eraser: &'static str,
    pub brush_size: &'static str,
    pub paint_label: &'static str,
    pub save: &'static str,
    pub saved: &'static str,
    pub back_to_queue: &'static str,
    pub shortcuts: &'static str,
    pub audit_log: &'static str,
    pub login_title: &'static str,
    pub login_token: &'static str,
    pub login_name: &'static str,
    pub login_submit: &'static str,
    pub logout: &'static str,
    pub login_failed: &'static str,
    pub login_required: &'static str,
    pub decision_failed: &'static str,
    pub decided: &'static str,
    pub language: &'static str,
    pub state_pending: &'static str,
    pub state_in_review: &'static str,
    pub state_accepted: &'static str,
    pub state_corrected: &'static str,
    pub state_rejected: &'static str,
    pub state_accepted_threshold: &'static str,
    pub component_entropy: &'static str,
    pub component_tta_agreement: &'static str,
    pub component_unet_vs_threshold_dice: &'static str,
    pub component_plausibility: &'static str,
    pub component_input_quality: &'static str,
}

impl Strings {
    /// Returns the display name of a state given by its API name.
    pub fn state_name(&self, state: &str) -> &'static str {
        match state {
            "pending" => self.state_pending,
            "in_review" => self.state_in_review,
            "accepted" => self.state_accepted,
            "corrected" => self.state_corrected,
            "rejected" => self.state_rejected,
            "accepted_threshold" => self.state_accepted_threshold,
            _ => "?",
        }
    }
}

pub static EN: Strings = Strings {
    title: "Penumbra QA",
    queue_title: "Review queue",
    queue_empty: "No cases waiting for review.",
    show_all: "Show all cases",
    show_pending: "Show waiting cases",
    study_uid: "Study Instance UID",
    arrival: "Arrival",
    urgency: "Urgency",
    state: "State",
    confidence: "Confidence",
    not_assessable: "not assessable",
    core: "Infarct core",
    penumbra: "Penumbra",
    hypoperfused: "Hypoperfused",
    unet: "U-Net",
    threshold: "Thresholds",
    volumes: "Volumes (mL)",
    components: "Confidence components",
    reasons: "Reasons",
    model_version: "Model version",
    slice: "Slice",
    accept: "Accept",
    reject: "Reject",
    accept_threshold: "Accept thresholds",
    correct_mask: "Correct mask",
    brush: "Brush",
    eraser: "Eraser",
    brush_size: "Brush size",
    paint_label: "Paint label",
    save: "Save",
    saved: "Correction saved",
    back_to_queue: "Back to queue",
    shortcuts: "Keys: A accept, R reject, T thresholds, B brush, E eraser, arrows slices, S save",
    audit_log: "Audit log",
    login_title: "Sign in",
    login_token: "Access token",
    login_name: "Your name",
    login_submit: "Sign in",
    logout: "Sign out",
    login_failed: "The access token is wrong.",
    login_required: "Sign in to continue.",
    decision_failed: "The decision was not saved",
    decided: "Decision saved",
    language: "Language",
    state_pending: "waiting",
    state_in_review: "in review",
    state_accepted: "accepted",
    state_corrected: "corrected",
    state_rejected: "rejected",
    state_accepted_threshold: "thresholds accepted",
    component_entropy: "U-Net certainty (1 - entropy)",
    component_tta_agreement: "Agreement on flipped input",
    component_unet_vs_threshold_dice: "U-Net vs thresholds (Dice)",
    component_plausibility: "Volume plausibility",
    component_input_quality: "Input quality",
};

pub static CS: Strings = Strings {
    title: "Penumbra – kontrola kvality",
    queue_title: "Fronta k revizi",
    queue_empty: "Žádné případy nečekají na revizi.",
    show_all: "Zobrazit všechny případy",
    show_pending: "Zobrazit čekající případy",
    study_uid: "Study Instance UID",
    arrival: "Příjem",
    urgency: "Naléhavost",
    state: "Stav",
    confidence: "Spolehlivost",
    not_assessable: "nelze hodnotit",
    core: "Jádro infarktu",
    penumbra: "Penumbra",
    hypoperfused: "Hypoperfundovaná tkáň",
    unet: "U-Net",
    threshold: "Prahování",
    volumes: "Objemy (ml)",
    components: "Složky spolehlivosti",
    reasons: "Důvody",
    model_version: "Verze modelu",
    slice: "Řez",
    accept: "Přijmout",
    reject: "Zamítnout",
    accept_threshold: "Přijmout prahování",
    correct_mask: "Opravit masku",
    brush: "Štětec",
    eraser: "Guma",
    brush_size: "Velikost štětce",
    paint_label: "Třída",
    save: "Uložit",
    saved: "Oprava uložena",
    back_to_queue: "Zpět do fronty",
    shortcuts: "Klávesy: A přijmout, R zamítnout, T prahování, B štětec, E guma, šipky řezy, S uložit",
    audit_log: "Záznam změn",
    login_title: "Přihlášení",
    login_token: "Přístupový token",
    login_name: "Vaše jméno",
    login_submit: "Přihlásit",
    logout: "Odhlásit",
    login_failed: "Přístupový token není správný.",
    login_required: "Pro pokračování se přihlaste.",
    decision_failed: "Rozhodnutí se nepodařilo uložit",
    decided: "Rozhodnutí uloženo",
    language: "Jazyk",
    state_pending: "čeká",
    state_in_review: "v revizi",
    state_accepted: "přijato",
    state_corrected: "opraveno",
    state_rejected: "zamítnuto",
    state_accepted_threshold: "přijato prahování",
    component_entropy: "Jistota U-Net (1 − entropie)",
    component_tta_agreement: "Shoda na zrcadleném vstupu",
    component_unet_vs_threshold_dice: "U-Net proti prahování (Dice)",
    component_plausibility: "Věrohodnost objemů",
    component_input_quality: "Kvalita vstupu",
};
