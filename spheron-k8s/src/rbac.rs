//! The least-privilege ClusterRole the launcher and inventory need, as code
//! ([`cluster_role`], [`cluster_role_binding`]) and as the YAML shipped in
//! `spheron-k8s/deploy/rbac.yaml` (a test keeps the two equal).
//!
//! Lease namespaces are created at run time, so the namespaced rights are granted cluster-wide
//! through a ClusterRoleBinding; they are limited to the verbs the launcher uses: it creates
//! Secrets but can never read one, and it creates pods only through Jobs and Deployments.

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Name of the shipped ClusterRole (and of its binding).
pub const ROLE_NAME: &str = "spheron-provider";

/// The shipped manifest (ClusterRole, ServiceAccount and ClusterRoleBinding).
pub const MANIFEST: &str = include_str!("../deploy/rbac.yaml");

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let v = |s: &[&str]| Some(s.iter().map(|x| x.to_string()).collect());
    PolicyRule {
        api_groups: v(groups),
        resources: v(resources),
        verbs: verbs.iter().map(|x| x.to_string()).collect(),
        ..Default::default()
    }
}

/// The rules: what `KubeLauncher` (launch, watch, logs, stop, reconcile) and `KubeInventory`
/// (nodes and pods, watched) call, and nothing else.
pub fn rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[""],
            &["namespaces"],
            &["create", "get", "list", "watch", "delete"],
        ),
        rule(&[""], &["nodes"], &["get", "list", "watch"]),
        rule(&[""], &["pods"], &["get", "list", "watch"]),
        rule(&[""], &["pods/log"], &["get"]),
        rule(&[""], &["events"], &["list", "watch"]),
        rule(
            &[""],
            &["resourcequotas", "limitranges", "services"],
            &["create"],
        ),
        rule(&[""], &["secrets"], &["create"]),
        rule(&["networking.k8s.io"], &["networkpolicies"], &["create"]),
        rule(&["batch"], &["jobs"], &["create", "get", "list", "watch"]),
        rule(
            &["apps"],
            &["deployments"],
            &["create", "get", "list", "watch"],
        ),
    ]
}

/// The ClusterRole.
pub fn cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(ROLE_NAME.to_string()),
            ..Default::default()
        },
        rules: Some(rules()),
        ..Default::default()
    }
}

/// A ClusterRoleBinding of the role to `subject` (a `ServiceAccount`, `User` or `Group`).
pub fn cluster_role_binding(name: &str, subject: Subject) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "ClusterRole".to_string(),
            name: ROLE_NAME.to_string(),
        },
        subjects: Some(vec![subject]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_yaml_is_the_role_in_code() {
        let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(MANIFEST)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let role = docs
            .iter()
            .find(|d| d["kind"] == "ClusterRole")
            .cloned()
            .unwrap();
        let role: ClusterRole = serde_json::from_value(role).unwrap();
        assert_eq!(role.metadata.name.as_deref(), Some(ROLE_NAME));
        assert_eq!(role.rules, cluster_role().rules);
        // Nothing may read secrets, and no wildcard anywhere.
        for r in rules() {
            let res = r.resources.clone().unwrap_or_default();
            assert!(!r.verbs.iter().any(|v| v == "*"));
            assert!(!res.iter().any(|x| x == "*"));
            if res.iter().any(|x| x == "secrets") {
                assert_eq!(r.verbs, ["create"]);
            }
        }
        let binding = docs
            .iter()
            .find(|d| d["kind"] == "ClusterRoleBinding")
            .unwrap();
        assert_eq!(binding["roleRef"]["name"], ROLE_NAME);
    }
}
