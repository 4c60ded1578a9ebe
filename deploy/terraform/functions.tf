# The three entry points of main.py as gen2 functions, built from one source zip of this repository.

data "archive_file" "source" {
  type        = "zip"
  source_dir  = local.source_dir
  output_path = "${path.module}/.build/rollback-controller-source.zip"
  # What Cloud Functions needs is main.py, controller/, policies/ and requirements.txt.
  excludes = [
    ".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
    "bench", "deploy", "docs", "samples", "scripts", "tests",
  ]
}

resource "google_storage_bucket" "source" {
  project                     = var.project
  name                        = "${var.project}-${var.name_prefix}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  depends_on                  = [google_project_service.apis]
}

resource "google_storage_bucket_object" "source" {
  # A new name per content: a changed source redeploys the functions, an unchanged one does not.
  name   = "rollback-controller-${data.archive_file.source.output_md5}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.source.output_path
}

locals {
  common_env = {
    GOOGLE_CLOUD_PROJECT         = var.project
    ROLLBACK_REGIONS             = join(",", var.regions)
    ROLLBACK_COMMANDS_TOPIC      = google_pubsub_topic.commands.id
    ROLLBACK_EVENTS_TOPIC        = google_pubsub_topic.events.id
    ROLLBACK_DELIVERY_DEADLINE   = tostring(var.delivery_deadline_seconds)
    ROLLBACK_DRY_RUN             = tostring(var.dry_run)
    SLACK_CHANNEL                = var.slack_channel
    ROLLBACK_SLACK_ALLOWED_USERS = join(",", var.slack_allowed_users)
  }
  http_env = merge(local.common_env, {
    ROLLBACK_AUTH_AUDIENCE = join(",", [local.http_url_functions, local.http_url_run])
    ROLLBACK_ALLOWED_PRINCIPALS = join(",", concat(
      [google_service_account.scheduler.email], var.allowed_principals,
    ))
    # Cloud Run IAM checks the token and strips its signature before the function sees it; the
    # function still checks every claim. Safe only while the function denies unauthenticated calls.
    ROLLBACK_AUTH_TRUST_PLATFORM = "true"
  })

}

resource "google_cloudfunctions2_function" "alert" {
  project     = var.project
  location    = var.region
  name        = local.names.alert
  description = "Cloud Monitoring incidents (Pub/Sub) -> rollback"

  build_config {
    runtime     = "python312"
    entry_point = "handle_alert"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory      = var.function_memory
    timeout_seconds       = var.function_timeout_seconds
    max_instance_count    = var.max_instances
    ingress_settings      = "ALLOW_INTERNAL_ONLY"
    service_account_email = google_service_account.controller.email
    environment_variables = local.common_env

    dynamic "secret_environment_variables" {
      for_each = local.slack_secrets
      content {
        key        = secret_environment_variables.key
        project_id = var.project
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.alerts.id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.trigger.email
  }

  lifecycle {
    precondition {
      condition     = var.function_timeout_seconds > var.delivery_deadline_seconds
      error_message = "function_timeout_seconds must be above delivery_deadline_seconds: at the timeout the platform stops the work mid-way."
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.slack]
}

resource "google_cloudfunctions2_function" "command" {
  project     = var.project
  location    = var.region
  name        = local.names.command
  description = "Commands published by handle_http (Slack actions, fleet canary ticks)"

  build_config {
    runtime     = "python312"
    entry_point = "handle_command"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory      = var.function_memory
    timeout_seconds       = var.function_timeout_seconds
    max_instance_count    = var.max_instances
    ingress_settings      = "ALLOW_INTERNAL_ONLY"
    service_account_email = google_service_account.controller.email
    environment_variables = local.common_env

    dynamic "secret_environment_variables" {
      for_each = local.slack_secrets
      content {
        key        = secret_environment_variables.key
        project_id = var.project
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.commands.id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.trigger.email
  }

  lifecycle {
    precondition {
      condition     = var.function_timeout_seconds > var.delivery_deadline_seconds
      error_message = "function_timeout_seconds must be above delivery_deadline_seconds: at the timeout the platform stops the work mid-way."
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.slack]
}

resource "google_cloudfunctions2_function" "http" {
  project     = var.project
  location    = var.region
  name        = local.names.http
  description = "Manual rollback/undo/hold/status, canary ticks and gates (private: IAM + ID tokens)"

  build_config {
    runtime     = "python312"
    entry_point = "handle_http"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory      = var.function_memory
    timeout_seconds       = var.function_timeout_seconds
    max_instance_count    = var.max_instances
    ingress_settings      = "ALLOW_ALL"
    service_account_email = google_service_account.controller.email
    environment_variables = local.http_env

    dynamic "secret_environment_variables" {
      for_each = local.slack_secrets
      content {
        key        = secret_environment_variables.key
        project_id = var.project
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.function_timeout_seconds > var.delivery_deadline_seconds
      error_message = "function_timeout_seconds must be above delivery_deadline_seconds: at the timeout the platform stops the work mid-way."
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.slack]
}
