# The controller's identity and exactly the permissions it uses (deploy/permissions.yaml, also the
# table in docs/security.md). One custom role per kind of resource Google checks the permissions on.

resource "google_service_account" "controller" {
  project      = var.project
  account_id   = "${var.name_prefix}-controller"
  display_name = "Rollback controller (functions' runtime identity)"
}

# Eventarc's push identity for the two Pub/Sub-triggered functions.
resource "google_service_account" "trigger" {
  project      = var.project
  account_id   = "${var.name_prefix}-trigger"
  display_name = "Rollback controller: Eventarc triggers"
}

# Cloud Scheduler's identity for canary ticks; listed in ROLLBACK_ALLOWED_PRINCIPALS.
resource "google_service_account" "scheduler" {
  project      = var.project
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "Rollback controller: canary ticks"
}

locals {
  controller_member = "serviceAccount:${google_service_account.controller.email}"

  # Projects that need each custom role defined in them (project-level custom roles can only be
  # granted on resources of their own project).
  role_projects = {
    project = local.targets
    service = local.targets
    actas   = distinct([for sa in var.runtime_service_accounts : sa.project])
    topics  = [var.project]
    secrets = [var.project]
  }
  custom_roles = merge([
    for id, projects in local.role_projects : {
      for p in projects : "${id}/${p}" => { group = id, project = p }
    }
  ]...)

  slack_secrets = {
    for key, id in {
      SLACK_BOT_TOKEN      = var.slack_bot_token_secret_id
      SLACK_SIGNING_SECRET = var.slack_signing_secret_secret_id
    } : key => id if id != null
  }
}

resource "google_project_iam_custom_role" "controller" {
  for_each    = local.custom_roles
  project     = each.value.project
  role_id     = local.groups[each.value.group].role_id
  title       = local.groups[each.value.group].title
  description = "Bound on ${local.groups[each.value.group].bound_on}. Generated from deploy/permissions.yaml."
  permissions = [for p in local.groups[each.value.group].permissions : p.name]
}

# Project-checked permissions: list services, poll operations, read metrics.
resource "google_project_iam_member" "project" {
  for_each = toset(local.targets)
  project  = each.value
  role     = google_project_iam_custom_role.controller["project/${each.value}"].name
  member   = local.controller_member
}

# Service-checked permissions: on the project when every service there is a target...
resource "google_project_iam_member" "services" {
  for_each = length(var.target_services) == 0 ? toset(local.targets) : toset([])
  project  = each.value
  role     = google_project_iam_custom_role.controller["service/${each.value}"].name
  member   = local.controller_member
}

# ...or on the named services only.
resource "google_cloud_run_v2_service_iam_member" "services" {
  for_each = { for s in var.target_services : "${s.project}/${s.region}/${s.service}" => s }
  project  = each.value.project
  location = each.value.region
  name     = each.value.service
  role     = google_project_iam_custom_role.controller["service/${each.value.project}"].name
  member   = local.controller_member
}

resource "google_service_account_iam_member" "actas" {
  for_each           = { for sa in var.runtime_service_accounts : sa.email => sa }
  service_account_id = "projects/${each.value.project}/serviceAccounts/${each.value.email}"
  role               = google_project_iam_custom_role.controller["actas/${each.value.project}"].name
  member             = local.controller_member
}

resource "google_pubsub_topic_iam_member" "publish_commands" {
  project = var.project
  topic   = google_pubsub_topic.commands.name
  role    = google_project_iam_custom_role.controller["topics/${var.project}"].name
  member  = local.controller_member
}

resource "google_pubsub_topic_iam_member" "publish_events" {
  project = var.project
  topic   = google_pubsub_topic.events.name
  role    = google_project_iam_custom_role.controller["topics/${var.project}"].name
  member  = local.controller_member
}

resource "google_secret_manager_secret_iam_member" "slack" {
  for_each  = local.slack_secrets
  project   = var.project
  secret_id = each.value
  role      = google_project_iam_custom_role.controller["secrets/${var.project}"].name
  member    = local.controller_member
}

# Eventarc pushes to handle_alert and handle_command as the trigger account; the scheduler and the
# people/pipelines in var.invokers may call handle_http. Nobody else may invoke anything.
resource "google_cloud_run_v2_service_iam_member" "trigger_invokes" {
  for_each = {
    alert   = google_cloudfunctions2_function.alert
    command = google_cloudfunctions2_function.command
  }
  project  = var.project
  location = var.region
  name     = each.value.service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.trigger.email}"
}

resource "google_cloud_run_v2_service_iam_member" "http_invokers" {
  for_each = toset(concat(["serviceAccount:${google_service_account.scheduler.email}"], var.invokers))
  project  = var.project
  location = var.region
  name     = google_cloudfunctions2_function.http.service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}
