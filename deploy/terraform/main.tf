# The controller in one project: topics, the Monitoring notification channel, and the locals the
# other files share. See README.md for the order of things and what was not validated against Google.

data "google_project" "this" {
  project_id = var.project
}

locals {
  targets     = length(var.target_projects) > 0 ? distinct(var.target_projects) : [var.project]
  source_dir  = coalesce(var.source_dir, abspath("${path.module}/../.."))
  permissions = yamldecode(file("${path.module}/../permissions.yaml"))
  groups      = { for g in local.permissions.groups : g.id => g }

  names = {
    alert   = "${var.name_prefix}-alert"
    command = "${var.name_prefix}-command"
    http    = "${var.name_prefix}-http"
  }

  # Both URLs a gen2 function answers on, known before it exists (its own env var cannot refer to
  # the resource): the cloudfunctions.net one and Cloud Run's deterministic run.app one.
  http_url_functions = "https://${var.region}-${var.project}.cloudfunctions.net/${local.names.http}"
  http_url_run       = "https://${local.names.http}-${data.google_project.this.number}.${var.region}.run.app"

  monitoring_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-monitoring-notification.iam.gserviceaccount.com"

  apis = [
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "eventarc.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]
}

resource "google_project_service" "apis" {
  for_each           = var.enable_apis ? toset(local.apis) : toset([])
  project            = var.project
  service            = each.value
  disable_on_destroy = false
}

# -- topics ---------------------------------------------------------------------------------------

resource "google_pubsub_topic" "alerts" {
  project    = var.project
  name       = "${var.name_prefix}-alerts"
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "commands" {
  project    = var.project
  name       = "${var.name_prefix}-commands"
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "events" {
  project    = var.project
  name       = "${var.name_prefix}-events"
  depends_on = [google_project_service.apis]
}

# -- Cloud Monitoring -> alerts topic -------------------------------------------------------------

resource "google_monitoring_notification_channel" "alerts" {
  project      = var.project
  display_name = "rollback-controller (${google_pubsub_topic.alerts.name})"
  type         = "pubsub"
  labels = {
    topic = google_pubsub_topic.alerts.id
  }
}

# Cloud Monitoring publishes notifications as its own service agent; it needs publish on the
# topic and nothing else (roles/pubsub.publisher holds only pubsub.topics.publish).
resource "google_pubsub_topic_iam_member" "monitoring_publishes_alerts" {
  project = var.project
  topic   = google_pubsub_topic.alerts.name
  role    = "roles/pubsub.publisher"
  member  = local.monitoring_agent
}

# Alert policies live in var.project; services in other target projects are seen through its
# metrics scope.
resource "google_monitoring_monitored_project" "targets" {
  for_each      = toset([for p in local.targets : p if p != var.project])
  metrics_scope = var.project
  name          = each.value
}
