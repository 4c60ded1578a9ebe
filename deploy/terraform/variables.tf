variable "project" {
  description = "Project that hosts the controller: its functions, topics, scheduler jobs, alert policies and telemetry."
  type        = string
}

variable "region" {
  description = "Region the controller's functions and scheduler jobs run in."
  type        = string
  default     = "europe-west1"
}

variable "regions" {
  description = "Regions of the Cloud Run services the controller manages (ROLLBACK_REGIONS: canary ticks walk them)."
  type        = list(string)
  validation {
    condition     = length(var.regions) > 0
    error_message = "Name at least one region whose Cloud Run services the controller manages."
  }
}

variable "target_projects" {
  description = "Projects whose Cloud Run services the controller manages; empty means only var.project."
  type        = list(string)
  default     = []
}

variable "target_services" {
  description = <<-EOT
    Bind the service-level permissions (get/update the service, read its revisions) on these
    services only (each in one of the target projects). Empty: bind them on every target
    project (every service there is a target).
  EOT
  type = list(object({
    project = string
    region  = string
    service = string
  }))
  default = []
}

variable "runtime_service_accounts" {
  description = <<-EOT
    Runtime service accounts of the target services (and the project each lives in): Cloud Run
    requires iam.serviceAccounts.actAs on them for every update, even a traffic-only one.
  EOT
  type = list(object({
    project = string
    email   = string
  }))
  validation {
    condition     = length(var.runtime_service_accounts) > 0
    error_message = "Name the runtime service account of the target services (the Compute default one is PROJECT_NUMBER-compute@developer.gserviceaccount.com)."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (functions, topics, service accounts, roles)."
  type        = string
  default     = "rollback"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,14}$", var.name_prefix))
    error_message = "name_prefix: lowercase letters, digits and -, starting with a letter, at most 15 characters."
  }
}

variable "invokers" {
  description = "IAM members allowed to call handle_http (run.invoker), e.g. group:sre-oncall@example.com. Never allUsers or allAuthenticatedUsers."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for m in var.invokers : !contains(["allUsers", "allAuthenticatedUsers"], m)])
    error_message = "handle_http is private: grant invoke to groups and named service accounts, never allUsers or allAuthenticatedUsers."
  }
}

variable "allowed_principals" {
  description = "ROLLBACK_ALLOWED_PRINCIPALS besides the scheduler's service account: emails and *@domain entries."
  type        = list(string)
  default     = []
}

variable "slack_channel" {
  description = "SLACK_CHANNEL: default channel for messages (a policy's notify.slack_channel wins)."
  type        = string
  default     = ""
}

variable "slack_allowed_users" {
  description = "ROLLBACK_SLACK_ALLOWED_USERS: Slack user ids allowed to press the controller's buttons."
  type        = list(string)
  default     = []
}

# Secret Manager secret ids, never values: the values stay out of variables and state.
variable "slack_bot_token_secret_id" {
  description = "Secret Manager secret id (in var.project) holding the Slack bot token; null: no Slack bot."
  type        = string
  default     = null
}

variable "slack_signing_secret_secret_id" {
  description = "Secret Manager secret id (in var.project) holding the Slack signing secret; null: no Slack buttons."
  type        = string
  default     = null
}

variable "dry_run" {
  description = "ROLLBACK_DRY_RUN: decide and notify, never change traffic."
  type        = bool
  default     = false
}

variable "delivery_deadline_seconds" {
  description = "ROLLBACK_DELIVERY_DEADLINE: every delivery acts, acknowledges or raises within this many seconds."
  type        = number
  default     = 50
}

variable "function_timeout_seconds" {
  description = "Timeout of each function; must be above delivery_deadline_seconds (the platform answers 504 and stops the work at the timeout)."
  type        = number
  default     = 60
}

variable "function_memory" {
  description = "Memory of each function (the Cloud Run and Monitoring clients need more than the 256M default)."
  type        = string
  default     = "512Mi"
}

variable "max_instances" {
  description = "Maximum instances per function."
  type        = number
  default     = 10
}

variable "canary_tick_schedule" {
  description = "Cron schedule of the canary tick (one Cloud Scheduler job per target project); null: no ticks."
  type        = string
  default     = "*/5 * * * *"
}

variable "source_dir" {
  description = "Directory zipped as the functions' source (main.py, controller/, policies/, requirements.txt); null: this repository."
  type        = string
  default     = null
}

variable "enable_apis" {
  description = "Enable the Google APIs the controller needs in var.project."
  type        = bool
  default     = true
}
