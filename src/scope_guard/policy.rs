use std::collections::HashMap;
use std::fmt;

use http::HeaderValue;

use crate::error::{ConfigError, ConfigErrorKind};
use crate::resource::ProtectedResource;
use crate::scope::{Scope, ScopeHierarchy, ScopeSet};

/// What an operation needs: every clause satisfied, a clause by any one of its scopes.
///
/// ```
/// use tower_mcp_auth::scope_guard::Requirement;
///
/// // mcp:write, and either files:read or files:admin
/// let r = Requirement::all(["mcp:write"]).and(Requirement::any(["files:read", "files:admin"]));
/// # drop(r);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    clauses: Vec<Vec<String>>,
}

impl Requirement {
    /// Nothing beyond a valid token.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every one of `scopes`.
    pub fn all<I, T>(scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self { clauses: scopes.into_iter().map(|s| vec![s.into()]).collect() }
    }

    /// At least one of `scopes`. A challenge for an unmet any-of names its first scope.
    pub fn any<I, T>(scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let clause: Vec<String> = scopes.into_iter().map(Into::into).collect();
        Self { clauses: if clause.is_empty() { Vec::new() } else { vec![clause] } }
    }

    /// Both this and `other`.
    pub fn and(mut self, other: Requirement) -> Self {
        self.clauses.extend(other.clauses);
        self
    }

    fn compile(&self) -> Result<Compiled, ConfigError> {
        let clauses = self
            .clauses
            .iter()
            .map(|c| {
                c.iter()
                    .map(|s| {
                        Scope::new(s).map_err(|_| {
                            ConfigError::new(ConfigErrorKind::InvalidScope, format!("invalid scope {s:?}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Compiled { clauses })
    }
}

impl fmt::Debug for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.clauses).finish()
    }
}

#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub(crate) struct Compiled {
    clauses: Vec<Vec<Scope>>,
}

impl Compiled {
    fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }
}

/// The scope rules of a [`ScopeGuardLayer`](super::ScopeGuardLayer).
///
/// A request needs the base requirement ([`require`](ScopePolicyBuilder::require)) plus, for
/// each JSON-RPC message in its body, the rule of its `method` and of the tool, resource or
/// prompt it names. Per-route rules are expressed by applying a guard to a route (for example
/// with axum's `route_layer`), so the guard and the router always agree on the path.
#[derive(Clone)]
pub struct ScopePolicy {
    pub(crate) base: Compiled,
    methods: HashMap<String, Compiled>,
    tools: HashMap<String, Compiled>,
    resources: HashMap<String, Compiled>,
    prompts: HashMap<String, Compiled>,
    hierarchy: ScopeHierarchy,
    pub(crate) max_body_bytes: usize,
}

impl fmt::Debug for ScopePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopePolicy")
            .field("base", &self.base)
            .field("methods", &self.methods)
            .field("tools", &self.tools)
            .field("resources", &self.resources)
            .field("prompts", &self.prompts)
            .field("hierarchy", &self.hierarchy)
            .finish()
    }
}

/// Builds a [`ScopePolicy`].
#[derive(Debug, Clone, Default)]
pub struct ScopePolicyBuilder {
    base: Requirement,
    methods: Vec<(String, Requirement)>,
    tools: Vec<(String, Requirement)>,
    resources: Vec<(String, Requirement)>,
    prompts: Vec<(String, Requirement)>,
    hierarchy: ScopeHierarchy,
    max_body_bytes: Option<usize>,
}

/// Default cap on a JSON-RPC body the guard reads (4 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

impl ScopePolicy {
    /// Starts a policy.
    pub fn builder() -> ScopePolicyBuilder {
        ScopePolicyBuilder::default()
    }

    /// A policy with only a base requirement.
    pub fn require(requirement: Requirement) -> Result<Self, ConfigError> {
        Self::builder().require(requirement).build()
    }

    /// Whether rules depend on the JSON-RPC body.
    pub(crate) fn inspects_body(&self) -> bool {
        !(self.methods.is_empty() && self.tools.is_empty() && self.resources.is_empty() && self.prompts.is_empty())
    }

    /// The rules that apply to one message.
    pub(crate) fn rules_for<'a>(&'a self, method: Option<&str>, name: Option<&str>, out: &mut Vec<&'a Compiled>) {
        let Some(method) = method else { return };
        if let Some(r) = self.methods.get(method) {
            out.push(r);
        }
        let Some(name) = name else { return };
        let table = match method {
            "tools/call" => &self.tools,
            "resources/read" => &self.resources,
            "prompts/get" => &self.prompts,
            _ => return,
        };
        if let Some(r) = table.get(name) {
            out.push(r);
        }
    }

    /// Checks `granted` against the base requirement and `extra` rules; on failure returns
    /// the `insufficient_scope` challenge naming every scope the operation needs.
    pub(crate) fn check(
        &self,
        granted: &ScopeSet,
        extra: &[&Compiled],
        resource: &ProtectedResource,
    ) -> Result<(), HeaderValue> {
        let satisfied = |clause: &Vec<Scope>| clause.iter().any(|s| self.hierarchy.satisfies(granted, s));
        let rules = std::iter::once(&self.base).chain(extra.iter().copied());
        // Route-level rules only (no MCP rule matched): the common case, without the chain.
        let ok = if extra.is_empty() {
            self.base.clauses.iter().all(satisfied)
        } else {
            rules.clone().flat_map(|r| r.clauses.iter()).all(satisfied)
        };
        if ok {
            return Ok(());
        }
        let mut needed: Vec<&Scope> = Vec::new();
        for clause in rules.flat_map(|r| r.clauses.iter()) {
            let pick = clause.iter().find(|s| self.hierarchy.satisfies(granted, s)).or_else(|| clause.first());
            if let Some(s) = pick
                && !needed.contains(&s)
            {
                needed.push(s);
            }
        }
        Err(resource.insufficient_scope_challenge(needed))
    }
}

impl ScopePolicyBuilder {
    /// Adds to the requirement every request has.
    pub fn require(mut self, requirement: Requirement) -> Self {
        self.base = std::mem::take(&mut self.base).and(requirement);
        self
    }

    /// The requirement of a JSON-RPC method (e.g. `tools/list`).
    pub fn mcp_method(mut self, method: impl Into<String>, requirement: Requirement) -> Self {
        self.methods.push((method.into(), requirement));
        self
    }

    /// The requirement of a `tools/call` for the tool `name`.
    pub fn mcp_tool(mut self, name: impl Into<String>, requirement: Requirement) -> Self {
        self.tools.push((name.into(), requirement));
        self
    }

    /// The requirement of a `resources/read` for `uri` (exact match).
    pub fn mcp_resource(mut self, uri: impl Into<String>, requirement: Requirement) -> Self {
        self.resources.push((uri.into(), requirement));
        self
    }

    /// The requirement of a `prompts/get` for the prompt `name`.
    pub fn mcp_prompt(mut self, name: impl Into<String>, requirement: Requirement) -> Self {
        self.prompts.push((name.into(), requirement));
        self
    }

    /// Scope implications to honour (a broader scope satisfies a narrower one).
    pub fn hierarchy(mut self, hierarchy: ScopeHierarchy) -> Self {
        self.hierarchy = hierarchy;
        self
    }

    /// Largest JSON-RPC body read for MCP rules (default 4 MiB); larger bodies get 413.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = Some(bytes);
        self
    }

    /// Validates every scope and freezes the policy.
    pub fn build(self) -> Result<ScopePolicy, ConfigError> {
        let table = |rules: Vec<(String, Requirement)>| -> Result<HashMap<String, Compiled>, ConfigError> {
            let mut map: HashMap<String, Compiled> = HashMap::new();
            for (key, req) in rules {
                let compiled = req.compile()?;
                if compiled.is_empty() {
                    continue;
                }
                let entry = map.entry(key).or_default();
                entry.clauses.extend(compiled.clauses);
            }
            Ok(map)
        };
        Ok(ScopePolicy {
            base: self.base.compile()?,
            methods: table(self.methods)?,
            tools: table(self.tools)?,
            resources: table(self.resources)?,
            prompts: table(self.prompts)?,
            hierarchy: self.hierarchy,
            max_body_bytes: self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        })
    }
}
