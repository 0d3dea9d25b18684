//! Pods refused on creation, as the API server's validating admission refuses them (the
//! namespace's Pod Security level, a ResourceQuota, an admission webhook): a test names the
//! images whose pods are refused and why. The Job controller then makes no pod for the Job and
//! says so in a `FailedCreate` Event on it, as the real one does.

use std::sync::Mutex;

use serde_json::Value;

use crate::error::ApiError;
use crate::util::{self, glob_match};

/// Rules refusing the creation of pods.
#[derive(Default)]
pub struct Admission {
    refused: Mutex<Vec<(String, String)>>,
}

impl Admission {
    /// Pods with a container (init or not) whose image matches `image_glob` are refused with
    /// 403 `pods "NAME" is forbidden: WHY`.
    pub fn refuse_pods(&self, image_glob: &str, why: &str) {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((image_glob.into(), why.into()));
    }

    /// Refuses the pod `pod` (named already) if a rule says so.
    pub(crate) fn admit_pod(&self, pod: &Value) -> Result<(), ApiError> {
        let rules = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let images = ["/spec/initContainers", "/spec/containers"]
            .iter()
            .filter_map(|path| pod.pointer(path).and_then(Value::as_array))
            .flatten()
            .filter_map(|container| container.get("image").and_then(Value::as_str));
        for image in images {
            if let Some((_, why)) = rules.iter().rev().find(|(glob, _)| glob_match(glob, image)) {
                return Err(ApiError::forbidden(format!(
                    "pods \"{}\" is forbidden: {why}",
                    util::name(pod)
                )));
            }
        }
        Ok(())
    }
}
