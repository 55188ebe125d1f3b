//! A workflow file: its TOML shape, and every check made when it loads.
//!
//! Parsing collects every problem it can find, each as `FILE:LINE: reason`,
//! so an operator fixes a file in one go: the shape (unknown keys, wrong
//! types) from the TOML parser, then names, templates and references from
//! the checks here.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use toml::Spanned;

use super::template::{Expr, Template};
use crate::model::{RetryPolicy, RetrySection};

/// The most steps a workflow may have.
pub const MAX_STEPS: usize = 100;
/// The default `max_parallel` of a `for_each` step.
pub const DEFAULT_PARALLEL: usize = 4;
/// The input types, as JSON Schema names them.
const INPUT_TYPES: &[&str] = &["string", "integer", "number", "boolean", "array", "object"];
/// The longest a gate may wait.
const MAX_GATE: Duration = Duration::from_secs(30 * 86_400);

/// A workflow, as loaded.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The operation type it defines.
    pub name: String,
    /// Its version.
    pub version: semver::Version,
    /// Short title.
    pub title: String,
    /// What it does.
    pub description: String,
    /// Its inputs (the params of its type), by name.
    pub inputs: Vec<Input>,
    /// Its steps, in order.
    pub steps: Vec<Step>,
    /// The file it came from.
    pub source: String,
}

/// One input.
#[derive(Debug, Clone)]
pub struct Input {
    /// Its name.
    pub name: String,
    /// Its JSON type.
    pub kind: String,
    /// An array's element type.
    pub items: Option<String>,
    /// What it is for.
    pub description: String,
    /// Its default.
    pub default: Option<Value>,
    /// Whether a start must give it.
    pub required: bool,
}

/// One step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its name, unique in the workflow.
    pub name: String,
    /// The operation type it runs.
    pub op_type: String,
    /// Its children's target; the run's if `None`.
    pub target: Option<Template>,
    /// Its children's params.
    pub params: Template,
    /// The list it runs once per item of.
    pub for_each: Option<Template>,
    /// Most children running at once.
    pub max_parallel: usize,
    /// Its children's retry policy.
    pub retry: Option<RetryPolicy>,
    /// What its failure does to the run.
    pub on_failure: OnFailure,
    /// Its approval gate.
    pub approval: Option<Approval>,
}

/// What a step's failure does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The run fails; later steps are skipped.
    Stop,
    /// The run goes on.
    Continue,
}

/// A gate before a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// `viewer`, `operator` or `admin`: the role an approver needs.
    pub role: String,
    /// How long the gate waits before `on_timeout` decides.
    pub timeout: Duration,
    /// What the timeout decides.
    pub on_timeout: OnTimeout,
    /// Whether whoever started the run may decide.
    pub self_approval: bool,
}

/// What a gate's timeout decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// The step does not run.
    Reject,
    /// The step runs.
    Approve,
}

/// Why a file did not load: every problem found, as `FILE:LINE: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The problems.
    pub errors: Vec<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.errors.join("; "))
    }
}

impl std::error::Error for LoadError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    name: Spanned<String>,
    #[serde(default)]
    version: Option<Spanned<String>>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<RawInput>>,
    #[serde(default)]
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    items: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    default: Option<toml::Value>,
    #[serde(default)]
    required: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Spanned<String>,
    #[serde(rename = "type")]
    op_type: Spanned<String>,
    #[serde(default)]
    params: Option<Spanned<toml::Table>>,
    #[serde(default)]
    target: Option<Spanned<String>>,
    #[serde(default)]
    for_each: Option<Spanned<String>>,
    #[serde(default)]
    max_parallel: Option<Spanned<i64>>,
    #[serde(default)]
    retry: Option<Spanned<RetrySection>>,
    #[serde(default)]
    on_failure: Option<Spanned<String>>,
    #[serde(default)]
    approval: Option<Spanned<RawApproval>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    role: String,
    timeout: String,
    #[serde(default)]
    on_timeout: Option<String>,
    #[serde(default)]
    self_approval: bool,
}

/// Collects `FILE:LINE: reason` problems.
struct Problems<'a> {
    path: &'a str,
    text: &'a str,
    errors: Vec<String>,
}

impl Problems<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }

    fn at(&mut self, span: std::ops::Range<usize>, reason: impl fmt::Display) {
        let line = self.line(span.start);
        self.errors.push(format!("{}:{line}: {reason}", self.path));
    }
}

fn valid_name(name: &str, extra: &[char]) -> bool {
    let mut chars = name.chars();
    let first = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || extra.contains(&c))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl Workflow {
    /// Parses and checks the file at `path` whose contents are `text`.
    pub fn parse(path: &str, text: &str) -> Result<Workflow, LoadError> {
        let mut problems = Problems { path, text, errors: Vec::new() };
        let raw: RawWorkflow = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let line = e.span().map_or(1, |s| problems.line(s.start));
                let reason = e.message().trim().to_owned();
                return Err(LoadError { errors: vec![format!("{path}:{line}: {reason}")] });
            }
        };
        let workflow = build(raw, &mut problems);
        if problems.errors.is_empty() { Ok(workflow) } else { Err(LoadError { errors: problems.errors }) }
    }

    /// The JSON Schema of its inputs: the params schema of its type.
    pub fn params_schema(&self) -> Value {
        let mut properties = serde_json::Map::new();
        for input in &self.inputs {
            let mut schema = json!({ "type": input.kind });
            if let Some(items) = &input.items {
                schema["items"] = json!({ "type": items });
            }
            if !input.description.is_empty() {
                schema["description"] = json!(input.description);
            }
            if let Some(default) = &input.default {
                schema["default"] = default.clone();
            }
            properties.insert(input.name.clone(), schema);
        }
        let required: Vec<&str> = self.inputs.iter().filter(|i| i.required).map(|i| i.name.as_str()).collect();
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": self.title,
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        })
    }

    /// The operation types its steps run.
    pub fn step_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.steps.iter().map(|s| s.op_type.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        types
    }
}

fn build(raw: RawWorkflow, problems: &mut Problems<'_>) -> Workflow {
    let name = raw.name.get_ref().clone();
    if !valid_name(&name, &[]) {
        problems.at(
            raw.name.span(),
            format!("name {name:?}: use 1 to 63 of a-z, 0-9 and -, starting with a letter or digit"),
        );
    }
    let version = match &raw.version {
        None => semver::Version::new(1, 0, 0),
        Some(v) => semver::Version::parse(v.get_ref()).unwrap_or_else(|e| {
            problems.at(v.span(), format!("version {:?} is not semver: {e}", v.get_ref()));
            semver::Version::new(1, 0, 0)
        }),
    };
    let inputs = inputs(&raw.inputs, problems);
    if raw.steps.is_empty() || raw.steps.len() > MAX_STEPS {
        problems.at(raw.name.span(), format!("a workflow has 1 to {MAX_STEPS} [[steps]], not {}", raw.steps.len()));
    }
    let mut steps: Vec<Step> = Vec::with_capacity(raw.steps.len());
    let mut names: Vec<String> = Vec::new();
    for raw_step in &raw.steps {
        if let Some(step) = step(raw_step, &name, &inputs, &names, problems) {
            names.push(step.name.clone());
            steps.push(step);
        } else {
            names.push(raw_step.get_ref().name.get_ref().clone());
        }
    }
    Workflow {
        title: raw.title.unwrap_or_else(|| name.clone()),
        description: raw.description.unwrap_or_default(),
        name,
        version,
        inputs,
        steps,
        source: problems.path.to_owned(),
    }
}

fn inputs(raw: &BTreeMap<String, Spanned<RawInput>>, problems: &mut Problems<'_>) -> Vec<Input> {
    let mut out = Vec::new();
    for (name, spanned) in raw {
        let input = spanned.get_ref();
        let span = spanned.span();
        if !valid_name(name, &['_']) {
            problems.at(span.clone(), format!("input {name:?}: use a-z, 0-9, _ and -"));
        }
        if !INPUT_TYPES.contains(&input.kind.as_str()) {
            problems.at(
                span.clone(),
                format!("input {name}: type {:?} is not one of {}", input.kind, INPUT_TYPES.join(", ")),
            );
        }
        if let Some(items) = &input.items {
            if input.kind != "array" {
                problems.at(span.clone(), format!("input {name}: items is only for an array"));
            } else if !INPUT_TYPES.contains(&items.as_str()) {
                problems.at(
                    span.clone(),
                    format!("input {name}: items {items:?} is not one of {}", INPUT_TYPES.join(", ")),
                );
            }
        }
        let default = input.default.as_ref().map(to_json);
        if let Some(default) = &default {
            let kind = json_kind(default);
            let fits = kind == input.kind || (input.kind == "number" && kind == "integer");
            if !fits && INPUT_TYPES.contains(&input.kind.as_str()) {
                problems.at(span.clone(), format!("input {name}: its default is {kind}, not {}", input.kind));
            }
        }
        out.push(Input {
            name: name.clone(),
            kind: input.kind.clone(),
            items: input.items.clone(),
            description: input.description.clone(),
            required: input.required.unwrap_or(default.is_none()),
            default,
        });
    }
    out
}

fn step(
    spanned: &Spanned<RawStep>,
    workflow: &str,
    inputs: &[Input],
    earlier: &[String],
    problems: &mut Problems<'_>,
) -> Option<Step> {
    let raw = spanned.get_ref();
    let name = raw.name.get_ref().clone();
    let before = problems.errors.len();
    if !valid_name(&name, &['_']) {
        problems.at(raw.name.span(), format!("step name {name:?}: use 1 to 63 of a-z, 0-9, _ and -"));
    }
    if earlier.contains(&name) {
        problems.at(raw.name.span(), format!("step name {name:?} is used twice"));
    }
    let op_type = raw.op_type.get_ref().clone();
    if op_type == workflow {
        problems.at(raw.op_type.span(), format!("step {name} runs the workflow {workflow} itself"));
    }
    let for_each = raw.for_each.as_ref().and_then(|list| {
        let template = compile(&Value::String(list.get_ref().clone()), list.span(), problems)?;
        let scope = Refs { inputs, earlier, step: &name, in_for_each: false, for_each: true };
        check(&template, &scope, list.span(), problems);
        match template.whole() {
            Some(Expr::Input { name: input, path }) => {
                let kind = inputs.iter().find(|i| i.name == *input).map(|i| i.kind.as_str());
                if path.is_empty() && kind.is_some_and(|k| k != "array") {
                    problems.at(list.span(), format!("step {name}: for_each input {input} is not an array"));
                }
            }
            Some(Expr::Outputs { .. }) => {}
            _ => problems.at(
                list.span(),
                format!("step {name}: for_each must be one placeholder naming a list: \"{{{{ inputs.NAME }}}}\" or \"{{{{ steps.STEP.outputs... }}}}\""),
            ),
        }
        Some(template)
    });
    let refs = Refs { inputs, earlier, step: &name, in_for_each: for_each.is_some(), for_each: false };
    let params = match &raw.params {
        None => Some(Template::literal(json!({}))),
        Some(table) => compile(&to_json(table.get_ref()), table.span(), problems)
            .inspect(|t| check(t, &refs, table.span(), problems)),
    };
    let target = raw.target.as_ref().and_then(|t| {
        let template = compile(&Value::String(t.get_ref().clone()), t.span(), problems)?;
        check(&template, &refs, t.span(), problems);
        Some(template)
    });
    let max_parallel = match &raw.max_parallel {
        None => DEFAULT_PARALLEL,
        Some(n) if raw.for_each.is_none() => {
            problems.at(n.span(), format!("step {name}: max_parallel is only for a for_each step"));
            1
        }
        Some(n) if (1..=100).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            problems.at(n.span(), format!("step {name}: max_parallel must be 1 to 100, not {}", n.get_ref()));
            1
        }
    };
    let retry = raw.retry.as_ref().and_then(|r| {
        RetryPolicy::from_section(r.get_ref()).map_err(|e| problems.at(r.span(), format!("step {name}: {e}"))).ok()
    });
    let on_failure = match raw.on_failure.as_ref().map(|o| (o.get_ref().as_str(), o.span())) {
        None | Some(("stop", _)) => OnFailure::Stop,
        Some(("continue", _)) => OnFailure::Continue,
        Some((other, span)) => {
            problems.at(span, format!("step {name}: on_failure {other:?} is not \"stop\" or \"continue\""));
            OnFailure::Stop
        }
    };
    let approval = raw.approval.as_ref().and_then(|a| approval(a, &name, problems));
    if problems.errors.len() > before {
        return None;
    }
    Some(Step { name, op_type, target, params: params?, for_each, max_parallel, retry, on_failure, approval })
}

fn approval(spanned: &Spanned<RawApproval>, step: &str, problems: &mut Problems<'_>) -> Option<Approval> {
    let raw = spanned.get_ref();
    let span = spanned.span();
    let before = problems.errors.len();
    if !["viewer", "operator", "admin"].contains(&raw.role.as_str()) {
        problems
            .at(span.clone(), format!("step {step}: approval.role {:?} is not viewer, operator or admin", raw.role));
    }
    let timeout = match humantime::parse_duration(&raw.timeout) {
        Ok(t) if !t.is_zero() && t <= MAX_GATE => t,
        Ok(_) => {
            problems.at(span.clone(), format!("step {step}: approval.timeout must be above 0 and at most 30 days"));
            Duration::ZERO
        }
        Err(e) => {
            problems
                .at(span.clone(), format!("step {step}: approval.timeout {:?} is not a duration: {e}", raw.timeout));
            Duration::ZERO
        }
    };
    let on_timeout = match raw.on_timeout.as_deref() {
        None | Some("reject") => OnTimeout::Reject,
        Some("approve") => OnTimeout::Approve,
        Some(other) => {
            problems.at(span, format!("step {step}: approval.on_timeout {other:?} is not \"reject\" or \"approve\""));
            OnTimeout::Reject
        }
    };
    (problems.errors.len() == before).then(|| Approval {
        role: raw.role.clone(),
        timeout,
        on_timeout,
        self_approval: raw.self_approval,
    })
}

fn compile(value: &Value, span: std::ops::Range<usize>, problems: &mut Problems<'_>) -> Option<Template> {
    Template::compile(value).map_err(|e| problems.at(span, e)).ok()
}

/// What a step's templates may refer to.
struct Refs<'a> {
    inputs: &'a [Input],
    earlier: &'a [String],
    step: &'a str,
    /// The step runs `for_each`, so `item` is defined.
    in_for_each: bool,
    /// This is the `for_each` itself, where `item` is not defined yet.
    for_each: bool,
}

fn check(template: &Template, refs: &Refs<'_>, span: std::ops::Range<usize>, problems: &mut Problems<'_>) {
    for expr in template.exprs() {
        let problem = match expr {
            Expr::Target | Expr::RunId => None,
            Expr::Input { name, .. } if !refs.inputs.iter().any(|i| i.name == *name) => {
                Some(format!("{{{{ {expr} }}}}: there is no input {name:?} (declare it as [inputs.{name}])"))
            }
            Expr::Input { .. } => None,
            Expr::Outputs { step, .. } if step == refs.step => {
                Some(format!("{{{{ {expr} }}}}: a step cannot use its own outputs"))
            }
            Expr::Outputs { step, .. } if !refs.earlier.contains(step) => {
                Some(format!("{{{{ {expr} }}}}: no earlier step is named {step:?}"))
            }
            Expr::Outputs { .. } => None,
            Expr::Item { .. } if refs.for_each => Some(format!("{{{{ {expr} }}}}: for_each cannot use its own item")),
            Expr::Item { .. } if !refs.in_for_each => {
                Some(format!("{{{{ {expr} }}}}: item is only defined in a step with for_each"))
            }
            Expr::Item { .. } => None,
        };
        if let Some(problem) = problem {
            problems.at(span.clone(), format!("step {}: {problem}", refs.step));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"name = "secure-rollout"
version = "1.2.0"
title = "Check, certify, restart"

[inputs.users]
type = "array"
items = "string"
description = "Who gets a certificate"
[inputs.unit]
type = "string"
default = "nginx"

[[steps]]
name = "check"
type = "ssh-check"
params = { host = "{{ target }}", port = 22 }

[[steps]]
name = "certs"
type = "cert-issue"
for_each = "{{ inputs.users }}"
max_parallel = 5
params = { users = ["{{ item }}"], note = "after {{ steps.check.outputs.stage }}" }
retry = { attempts = 3, initial = "1s", max = "30s", jitter = 0.2 }
on_failure = "continue"

[[steps]]
name = "restart"
type = "service-restart"
params = { unit = "{{ inputs.unit }}" }
approval = { role = "operator", timeout = "1h", on_timeout = "approve", self_approval = true }
"#;

    fn errors(text: &str) -> Vec<String> {
        Workflow::parse("flows/x.toml", text).unwrap_err().errors
    }

    #[test]
    fn the_example_parses() {
        let w = Workflow::parse("flows/rollout.toml", EXAMPLE).unwrap();
        assert_eq!((w.name.as_str(), w.version.to_string().as_str()), ("secure-rollout", "1.2.0"));
        assert_eq!(w.steps.len(), 3);
        let certs = &w.steps[1];
        assert_eq!((certs.max_parallel, certs.on_failure), (5, OnFailure::Continue));
        assert_eq!(certs.retry.as_ref().unwrap().attempts, 3);
        assert!(certs.for_each.is_some());
        let gate = w.steps[2].approval.as_ref().unwrap();
        assert_eq!((gate.role.as_str(), gate.on_timeout, gate.self_approval), ("operator", OnTimeout::Approve, true));
        assert_eq!(gate.timeout, Duration::from_secs(3600));
        let schema = w.params_schema();
        assert_eq!(schema["required"], json!(["users"]));
        assert_eq!(schema["properties"]["users"]["items"]["type"], "string");
        assert_eq!(schema["properties"]["unit"]["default"], "nginx");
        assert_eq!(w.step_types(), ["cert-issue", "service-restart", "ssh-check"]);
        assert_eq!(w.source, "flows/rollout.toml");
    }

    #[test]
    fn problems_name_the_file_and_line() {
        let text = EXAMPLE.replace("{{ inputs.unit }}", "{{ inputs.units }}");
        let found = errors(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("flows/x.toml:30: step restart:"), "{found:?}");
        assert!(found[0].contains("no input \"units\""), "{found:?}");

        let later = EXAMPLE.replace("{{ target }}", "{{ steps.restart.outputs }}");
        assert!(
            errors(&later)[0].contains(":16: step check: {{ steps.restart.outputs }}: no earlier step"),
            "{:?}",
            errors(&later)
        );
        let item = EXAMPLE.replace("{{ inputs.unit }}", "{{ item }}");
        assert!(errors(&item)[0].contains("item is only defined in a step with for_each"));
        let syntax = EXAMPLE.replace("max_parallel = 5", "max_parallel = ");
        let found = errors(&syntax);
        assert!(found[0].starts_with("flows/x.toml:22:"), "{found:?}");
        let unknown = EXAMPLE.replace("max_parallel = 5", "max_paralel = 5");
        assert!(errors(&unknown)[0].contains("unknown field"), "{:?}", errors(&unknown));
    }

    #[test]
    fn every_problem_is_reported() {
        let text = EXAMPLE
            .replace("name = \"check\"", "name = \"Check!\"")
            .replace("on_failure = \"continue\"", "on_failure = \"retry\"")
            .replace("role = \"operator\"", "role = \"boss\"")
            .replace("attempts = 3", "attempts = 3, codes = [\"invalid_params\"]");
        let found = errors(&text);
        assert_eq!(found.len(), 5, "the four, and the reference to the misnamed step: {found:?}");
        assert!(found.iter().any(|e| e.contains("never retried")));
        assert!(found.iter().any(|e| e.contains("approval.role")));
    }

    #[test]
    fn shapes_and_references_are_checked() {
        let one = |step: &str| format!("name = \"w\"\n[inputs.n]\ntype = \"integer\"\n[[steps]]\n{step}\n");
        assert!(errors(&one("name = \"a\"\ntype = \"demo\"\nmax_parallel = 2"))[0].contains("only for a for_each"));
        assert!(
            errors(&one("name = \"a\"\ntype = \"demo\"\nfor_each = \"{{ inputs.n }}\""))[0].contains("not an array")
        );
        assert!(
            errors(&one("name = \"a\"\ntype = \"demo\"\nfor_each = \"x {{ target }}\""))[0].contains("one placeholder")
        );
        assert!(errors(&one("name = \"a\"\ntype = \"w\""))[0].contains("itself"));
        assert!(errors("name = \"w\"\n")[0].contains("1 to 100 [[steps]]"));
        assert!(
            errors("name = \"w\"\n[inputs.x]\ntype = \"string\"\ndefault = 3\n[[steps]]\nname = \"a\"\ntype = \"d\"\n")
                [0]
            .contains("default is integer")
        );
        let twice = "name = \"w\"\n[[steps]]\nname = \"a\"\ntype = \"d\"\n[[steps]]\nname = \"a\"\ntype = \"d\"\n";
        assert!(errors(twice)[0].starts_with("flows/x.toml:6:"), "{:?}", errors(twice));
    }
}
