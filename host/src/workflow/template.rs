//! Templates: `{{ expr }}` placeholders in the strings of a step's params,
//! target and `for_each`.
//!
//! A string that is exactly one placeholder is replaced by the value it
//! names, whatever its JSON type (a list stays a list); a placeholder inside
//! other text is interpolated (strings as they are, other values as JSON).
//! The expressions are few and fixed: `target`, `run.id`, `inputs.NAME...`,
//! `steps.STEP.outputs...` and `item...`, where `...` is a path of object
//! keys and list indexes (`.hosts.0.name`). They are parsed when a workflow
//! loads, so a typo refuses the file instead of failing a run.

use std::fmt;

use serde_json::{Map, Value};

/// What a placeholder refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// The run's target.
    Target,
    /// The run's id.
    RunId,
    /// An input of the run (its params), and a path into it.
    Input {
        /// The input's name.
        name: String,
        /// Keys and indexes below it.
        path: Vec<String>,
    },
    /// An earlier step's outputs, and a path into them.
    Outputs {
        /// The step's name.
        step: String,
        /// Keys and indexes below them.
        path: Vec<String>,
    },
    /// The current `for_each` item, and a path into it.
    Item {
        /// Keys and indexes below it.
        path: Vec<String>,
    },
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, path) = match self {
            Expr::Target => return f.write_str("target"),
            Expr::RunId => return f.write_str("run.id"),
            Expr::Input { name, path } => (format!("inputs.{name}"), path),
            Expr::Outputs { step, path } => (format!("steps.{step}.outputs"), path),
            Expr::Item { path } => ("item".to_owned(), path),
        };
        f.write_str(&head)?;
        for part in path {
            write!(f, ".{part}")?;
        }
        Ok(())
    }
}

const FORMS: &str = "target, run.id, inputs.NAME, steps.STEP.outputs, item (each may go on with .key or .0)";

impl Expr {
    fn parse(text: &str) -> Result<Expr, String> {
        let text = text.trim();
        let parts: Vec<&str> = text.split('.').collect();
        if text.is_empty() || parts.iter().any(|p| p.is_empty() || !p.chars().all(is_path_char)) {
            return Err(format!("{{{{ {text} }}}} is not an expression: use {FORMS}"));
        }
        let rest = |from: usize| parts[from..].iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        match parts.as_slice() {
            ["target"] => Ok(Expr::Target),
            ["run", "id"] => Ok(Expr::RunId),
            ["inputs", name, ..] => Ok(Expr::Input { name: (*name).to_owned(), path: rest(2) }),
            ["steps", step, "outputs", ..] => Ok(Expr::Outputs { step: (*step).to_owned(), path: rest(3) }),
            ["item", ..] => Ok(Expr::Item { path: rest(1) }),
            _ => Err(format!("{{{{ {text} }}}} is not an expression: use {FORMS}")),
        }
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// What a template may refer to while a run renders it.
pub struct Scope<'a> {
    /// The run's target.
    pub target: &'a str,
    /// The run's id.
    pub run_id: &'a str,
    /// The run's params.
    pub inputs: &'a Value,
    /// The outputs of the steps that have them, by step name.
    pub outputs: &'a Map<String, Value>,
    /// The current `for_each` item, in a `for_each` step.
    pub item: Option<&'a Value>,
}

/// One piece of a string.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Expr(Expr),
}

/// A JSON value whose strings may hold placeholders, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Node);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A value without placeholders.
    Literal(Value),
    /// A string that is exactly one placeholder.
    Whole(Expr),
    /// A string with placeholders among text.
    Text(Vec<Piece>),
    List(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Template {
    /// Compiles `value`; the error names the first malformed placeholder.
    pub fn compile(value: &Value) -> Result<Template, String> {
        compile(value).map(Template)
    }

    /// A template without placeholders.
    pub fn literal(value: Value) -> Template {
        Template(Node::Literal(value))
    }

    /// Whether it is exactly one placeholder (`"{{ inputs.hosts }}"`).
    pub fn whole(&self) -> Option<&Expr> {
        match &self.0 {
            Node::Whole(expr) => Some(expr),
            _ => None,
        }
    }

    /// Every placeholder, in order.
    pub fn exprs(&self) -> Vec<&Expr> {
        let mut out = Vec::new();
        collect(&self.0, &mut out);
        out
    }

    /// The value, with every placeholder replaced from `scope`.
    pub fn render(&self, scope: &Scope<'_>) -> Result<Value, String> {
        render(&self.0, scope)
    }
}

fn compile(value: &Value) -> Result<Node, String> {
    Ok(match value {
        Value::String(text) if text.contains("{{") => {
            let pieces = pieces(text)?;
            match pieces.as_slice() {
                [Piece::Expr(expr)] => Node::Whole(expr.clone()),
                _ => Node::Text(pieces),
            }
        }
        Value::Array(items) if contains_placeholder(value) => {
            Node::List(items.iter().map(compile).collect::<Result<_, _>>()?)
        }
        Value::Object(fields) if contains_placeholder(value) => {
            Node::Object(fields.iter().map(|(k, v)| Ok((k.clone(), compile(v)?))).collect::<Result<Vec<_>, String>>()?)
        }
        other => Node::Literal(other.clone()),
    })
}

fn contains_placeholder(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains("{{"),
        Value::Array(items) => items.iter().any(contains_placeholder),
        Value::Object(fields) => fields.values().any(contains_placeholder),
        _ => false,
    }
}

/// Splits `text` into text and placeholders.
fn pieces(text: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| format!("{text:?} opens a {{{{ that it does not close"))?;
        out.push(Piece::Expr(Expr::parse(&after[..close])?));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_owned()));
    }
    Ok(out)
}

fn collect<'a>(node: &'a Node, out: &mut Vec<&'a Expr>) {
    match node {
        Node::Literal(_) => {}
        Node::Whole(expr) => out.push(expr),
        Node::Text(pieces) => out.extend(pieces.iter().filter_map(|p| match p {
            Piece::Expr(e) => Some(e),
            Piece::Text(_) => None,
        })),
        Node::List(items) => items.iter().for_each(|n| collect(n, out)),
        Node::Object(fields) => fields.iter().for_each(|(_, n)| collect(n, out)),
    }
}

fn render(node: &Node, scope: &Scope<'_>) -> Result<Value, String> {
    Ok(match node {
        Node::Literal(value) => value.clone(),
        Node::Whole(expr) => lookup(expr, scope)?,
        Node::Text(pieces) => {
            let mut text = String::new();
            for piece in pieces {
                match piece {
                    Piece::Text(t) => text.push_str(t),
                    Piece::Expr(expr) => match lookup(expr, scope)? {
                        Value::String(s) => text.push_str(&s),
                        Value::Null => return Err(format!("{{{{ {expr} }}}} is null")),
                        other => text.push_str(&other.to_string()),
                    },
                }
            }
            Value::String(text)
        }
        Node::List(items) => Value::Array(items.iter().map(|n| render(n, scope)).collect::<Result<_, _>>()?),
        Node::Object(fields) => Value::Object(
            fields.iter().map(|(k, n)| Ok((k.clone(), render(n, scope)?))).collect::<Result<Map<_, _>, String>>()?,
        ),
    })
}

/// The value `expr` names in `scope`.
fn lookup(expr: &Expr, scope: &Scope<'_>) -> Result<Value, String> {
    let (root, path): (Value, &[String]) = match expr {
        Expr::Target => return Ok(Value::String(scope.target.to_owned())),
        Expr::RunId => return Ok(Value::String(scope.run_id.to_owned())),
        Expr::Input { name, path } => match scope.inputs.get(name) {
            Some(value) => (value.clone(), path),
            None => return Err(format!("{{{{ {expr} }}}}: the run has no input {name:?}")),
        },
        Expr::Outputs { step, path } => match scope.outputs.get(step) {
            Some(value) => (value.clone(), path),
            None => return Err(format!("{{{{ {expr} }}}}: step {step:?} has no outputs (yet)")),
        },
        Expr::Item { path } => match scope.item {
            Some(item) => (item.clone(), path),
            None => return Err(format!("{{{{ {expr} }}}}: not inside a for_each step")),
        },
    };
    let mut value = root;
    for part in path {
        value = match value {
            Value::Object(mut fields) => {
                fields.remove(part).ok_or_else(|| format!("{{{{ {expr} }}}}: no field {part:?}"))?
            }
            Value::Array(mut items) => {
                let len = items.len();
                let index: usize =
                    part.parse().map_err(|_| format!("{{{{ {expr} }}}}: {part:?} is not a list index"))?;
                if index >= len {
                    return Err(format!("{{{{ {expr} }}}}: no element {index} (the list has {len})"));
                }
                items.swap_remove(index)
            }
            other => return Err(format!("{{{{ {expr} }}}}: {part:?} goes into {other}, which has no fields")),
        };
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render_with(template: Value, item: Option<&Value>) -> Result<Value, String> {
        let inputs = json!({"users": ["ann", "bob"], "port": 22, "nested": {"a": [1, {"b": "deep"}]}});
        let outputs: Map<String, Value> =
            json!({"check": {"stage": "banner", "latency_ms": 3}}).as_object().unwrap().clone();
        let scope = Scope { target: "srv-1", run_id: "01RUN", inputs: &inputs, outputs: &outputs, item };
        Template::compile(&template)?.render(&scope)
    }

    #[test]
    fn a_whole_placeholder_keeps_the_type_and_text_interpolates() {
        assert_eq!(render_with(json!("{{ inputs.users }}"), None).unwrap(), json!(["ann", "bob"]));
        assert_eq!(render_with(json!("{{inputs.port}}"), None).unwrap(), json!(22));
        assert_eq!(render_with(json!("ssh://{{ target }}:{{ inputs.port }}"), None).unwrap(), json!("ssh://srv-1:22"));
        assert_eq!(
            render_with(json!({"u": ["{{ item }}"], "k": 1}), Some(&json!("ann"))).unwrap(),
            json!({"u": ["ann"], "k": 1})
        );
        assert_eq!(render_with(json!("{{ inputs.nested.a.1.b }}"), None).unwrap(), json!("deep"));
        assert_eq!(render_with(json!("{{ steps.check.outputs.stage }}"), None).unwrap(), json!("banner"));
        assert_eq!(render_with(json!("run {{ run.id }}"), None).unwrap(), json!("run 01RUN"));
        assert_eq!(render_with(json!("a }} b"), None).unwrap(), json!("a }} b"), "a lone }} is text");
    }

    #[test]
    fn errors_name_the_expression() {
        let err = |v: Value, item: Option<&Value>| render_with(v, item).unwrap_err();
        assert_eq!(err(json!("{{ inputs.users.3 }}"), None), "{{ inputs.users.3 }}: no element 3 (the list has 2)");
        assert_eq!(
            err(json!("{{ steps.check.outputs.port }}"), None),
            "{{ steps.check.outputs.port }}: no field \"port\""
        );
        assert_eq!(err(json!("{{ item }}"), None), "{{ item }}: not inside a for_each step");
        assert!(err(json!("{{ steps.later.outputs }}"), None).contains("has no outputs"));
        assert!(Template::compile(&json!("{{ inputs.port")).unwrap_err().contains("does not close"));
        assert!(Template::compile(&json!("{{ secrets.x }}")).unwrap_err().contains("is not an expression"));
        assert!(Template::compile(&json!("{{ inputs..x }}")).unwrap_err().contains("is not an expression"));
    }

    #[test]
    fn exprs_lists_every_placeholder() {
        let t = Template::compile(&json!({"a": "{{ target }}", "b": ["x {{ item.name }}"]})).unwrap();
        let shown: Vec<String> = t.exprs().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["target", "item.name"]);
        assert!(Template::compile(&json!("{{ inputs.users }}")).unwrap().whole().is_some());
        assert!(Template::literal(json!(1)).exprs().is_empty());
    }
}
