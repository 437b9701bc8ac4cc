//! Access rules, compiled: which actions a subject may take on a repository.
//!
//! With no rules, every authenticated subject may pull, push and delete everything and
//! anonymous clients nothing. Once rules exist, what no rule grants is denied.

use std::collections::{BTreeMap, BTreeSet};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::config::{Action, Rule, Subjects};

/// Who is asking: a user name and the groups it belongs to, or nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Anonymous,
    User { name: String, groups: Vec<String> },
}

impl Subject {
    pub fn name(&self) -> &str {
        match self {
            Subject::Anonymous => "-",
            Subject::User { name, .. } => name,
        }
    }
}

#[derive(Debug)]
pub struct Rules {
    compiled: Vec<Compiled>,
    groups: BTreeMap<String, Vec<String>>,
    admins: Subjects,
}

#[derive(Debug)]
struct Compiled {
    repositories: GlobSet,
    rule: Rule,
}

impl Rules {
    /// Compile `rules`; their globs were checked when the config was validated.
    pub fn new(rules: &[Rule], groups: BTreeMap<String, Vec<String>>, admins: Subjects) -> Self {
        let rules = rules
            .iter()
            .map(|rule| {
                let mut set = GlobSetBuilder::new();
                for glob in &rule.repositories {
                    if let Ok(g) = GlobBuilder::new(glob).literal_separator(true).build() {
                        set.add(g);
                    }
                }
                Compiled {
                    repositories: set.build().unwrap_or_else(|_| GlobSet::empty()),
                    rule: rule.clone(),
                }
            })
            .collect();
        Rules {
            compiled: rules,
            groups,
            admins,
        }
    }

    /// The subject for `user`, with the groups the config puts it in (plus `extra`, from a token).
    pub fn user(&self, user: &str, extra: &[String]) -> Subject {
        let mut groups: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, members)| members.iter().any(|m| m == user))
            .map(|(g, _)| g.clone())
            .collect();
        groups.extend(extra.iter().cloned());
        Subject::User {
            name: user.to_owned(),
            groups,
        }
    }

    /// Whether no rule is configured (every authenticated subject may do everything).
    pub fn is_empty(&self) -> bool {
        self.compiled.is_empty()
    }

    /// What `who` may do on `repo`.
    pub fn allowed(&self, who: &Subject, repo: &str) -> BTreeSet<Action> {
        if self.compiled.is_empty() {
            return match who {
                Subject::Anonymous => BTreeSet::new(),
                Subject::User { .. } => [Action::Pull, Action::Push, Action::Delete].into(),
            };
        }
        self.compiled
            .iter()
            .filter(|c| applies(&c.rule, who) && c.repositories.is_match(repo))
            .flat_map(|c| c.rule.actions.iter().copied())
            .collect()
    }

    /// Whether some rule grants anonymous callers pull (on any repository).
    pub fn anonymous_may_pull(&self) -> bool {
        self.compiled
            .iter()
            .any(|c| c.rule.anonymous && c.rule.actions.contains(&Action::Pull))
    }

    pub fn is_admin(&self, who: &Subject) -> bool {
        match who {
            Subject::Anonymous => false,
            Subject::User { name, groups } => {
                self.admins.users.contains(name) || groups.iter().any(|g| self.admins.groups.contains(g))
            }
        }
    }
}

fn applies(rule: &Rule, who: &Subject) -> bool {
    match who {
        Subject::Anonymous => rule.anonymous,
        Subject::User { name, groups } => {
            rule.anonymous || rule.users.contains(name) || groups.iter().any(|g| rule.groups.contains(g))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repos: &[&str], users: &[&str], groups: &[&str], anonymous: bool, actions: &[Action]) -> Rule {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Rule {
            repositories: s(repos),
            users: s(users),
            groups: s(groups),
            anonymous,
            actions: actions.to_vec(),
        }
    }

    fn rules() -> Rules {
        use Action::{Delete, Pull, Push};
        let groups = BTreeMap::from([("team-a".to_owned(), vec!["bob".to_owned()])]);
        Rules::new(
            &[
                rule(&["team-a/**"], &[], &["team-a"], false, &[Pull, Push]),
                rule(&["team-a/**"], &["alice"], &[], false, &[Delete]),
                rule(&["public/*"], &[], &[], true, &[Pull]),
            ],
            groups,
            Subjects {
                users: vec!["alice".into()],
                groups: vec![],
            },
        )
    }

    #[test]
    fn rules_grant_by_user_group_and_anonymity() {
        use Action::{Delete, Pull, Push};
        let r = rules();
        let bob = r.user("bob", &[]);
        let alice = r.user("alice", &[]);
        assert_eq!(r.allowed(&bob, "team-a/app/web"), [Pull, Push].into());
        assert_eq!(r.allowed(&bob, "team-b/app"), BTreeSet::new());
        assert_eq!(r.allowed(&alice, "team-a/app"), [Delete].into());
        assert_eq!(r.allowed(&Subject::Anonymous, "public/x"), [Pull].into());
        assert_eq!(
            r.allowed(&Subject::Anonymous, "public/x/y"),
            BTreeSet::new(),
            "* stays in one component"
        );
        assert_eq!(
            r.allowed(&bob, "public/x"),
            [Pull].into(),
            "what anyone may do, users may"
        );
        assert!(r.anonymous_may_pull());
        assert!(r.is_admin(&alice));
        assert!(!r.is_admin(&bob));
        assert!(!r.is_admin(&Subject::Anonymous));
    }

    #[test]
    fn no_rules_let_users_do_everything_and_anonymous_nothing() {
        let r = Rules::new(&[], BTreeMap::new(), Subjects::default());
        assert_eq!(r.allowed(&r.user("x", &[]), "any/repo").len(), 3);
        assert!(r.allowed(&Subject::Anonymous, "any/repo").is_empty());
        assert!(!r.anonymous_may_pull());
    }
}
