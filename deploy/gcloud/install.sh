#!/usr/bin/env bash
# Install the rollback controller in one project with gcloud: the same resources as deploy/terraform.
#
#   deploy/gcloud/install.sh --project P --regions europe-west1[,us-central1] \
#       --runtime-service-account P:123-compute@developer.gserviceaccount.com [options] [--dry-run]
#
# Idempotent: every resource is described (or listed) before it is created, and changed only when
# it differs from what this script would create; a second run with the same arguments changes
# nothing. --dry-run prints every gcloud command instead of running it (lookups print too, and are
# then treated as "not found", so the output is the whole first installation). Needs gcloud (with
# the alpha and beta components, for Monitoring channels and policies) and a Python that can run
# the controller (python -m controller alert-policies), e.g. the repository's .venv.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python3}

usage() {
  cat <<'EOF'
usage: deploy/gcloud/install.sh --project P --regions R1[,R2] --runtime-service-account PROJECT:EMAIL [options]

required:
  --project P                    project hosting the controller (functions, topics, scheduler, telemetry)
  --regions R1,R2                regions of the Cloud Run services it manages (ROLLBACK_REGIONS)
  --runtime-service-account P:E  runtime service account E (in project P) of target services; repeatable
options:
  --region R                     region of the functions and scheduler jobs (default europe-west1)
  --target-project P             a project whose services are managed (repeatable; default --project)
  --target-service P/R/S         bind service-level permissions on this service only (repeatable;
                                 default: on each target project)
  --invoker MEMBER               may call handle_http, e.g. group:sre@example.com (repeatable)
  --allowed-principal E          ROLLBACK_ALLOWED_PRINCIPALS entry besides the scheduler (repeatable)
  --slack-channel C              SLACK_CHANNEL
  --slack-allowed-users U1,U2    ROLLBACK_SLACK_ALLOWED_USERS
  --slack-bot-token-secret ID    Secret Manager secret (in --project) with the Slack bot token
  --slack-signing-secret-secret ID  Secret Manager secret with the Slack signing secret
  --name-prefix X                prefix of every name (default rollback)
  --deadline S                   ROLLBACK_DELIVERY_DEADLINE seconds (default 50)
  --timeout S                    function timeout seconds, above --deadline (default 60)
  --memory M                     function memory (default 512Mi)
  --max-instances N              default 10
  --schedule CRON                canary tick schedule (default "*/5 * * * *"; "none": no ticks)
  --dry-run                      print every command, run none
EOF
}

die() {
  printf 'install.sh: error: %s\n' "$1" >&2
  exit 2
}

PROJECT="" REGION="europe-west1" REGIONS="" PREFIX="rollback" DRY_RUN=0
DEADLINE=50 TIMEOUT=60 MEMORY="512Mi" MAX_INSTANCES=10 SCHEDULE="*/5 * * * *"
SLACK_CHANNEL="" SLACK_USERS="" BOT_SECRET="" SIGNING_SECRET=""
TARGET_PROJECTS=() TARGET_SERVICES=() RUNTIME_SAS=() INVOKERS=() PRINCIPALS=()

while [ $# -gt 0 ]; do
  case "$1" in
    --project) PROJECT=${2:?}; shift ;;
    --region) REGION=${2:?}; shift ;;
    --regions) REGIONS=${2:?}; shift ;;
    --target-project) TARGET_PROJECTS+=("${2:?}"); shift ;;
    --target-service) TARGET_SERVICES+=("${2:?}"); shift ;;
    --runtime-service-account) RUNTIME_SAS+=("${2:?}"); shift ;;
    --invoker) INVOKERS+=("${2:?}"); shift ;;
    --allowed-principal) PRINCIPALS+=("${2:?}"); shift ;;
    --slack-channel) SLACK_CHANNEL=${2:?}; shift ;;
    --slack-allowed-users) SLACK_USERS=${2:?}; shift ;;
    --slack-bot-token-secret) BOT_SECRET=${2:?}; shift ;;
    --slack-signing-secret-secret) SIGNING_SECRET=${2:?}; shift ;;
    --name-prefix) PREFIX=${2:?}; shift ;;
    --deadline) DEADLINE=${2:?}; shift ;;
    --timeout) TIMEOUT=${2:?}; shift ;;
    --memory) MEMORY=${2:?}; shift ;;
    --max-instances) MAX_INSTANCES=${2:?}; shift ;;
    --schedule) SCHEDULE=${2:?}; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
  esac
  shift
done

[ -n "$PROJECT" ] || die "--project is required (the project that hosts the controller)"
[ -n "$REGIONS" ] || die "--regions is required (regions of the Cloud Run services it manages)"
[ ${#RUNTIME_SAS[@]} -gt 0 ] || die "--runtime-service-account PROJECT:EMAIL is required (the target services' identity)"
[[ "$PREFIX" =~ ^[a-z][a-z0-9-]{0,14}$ ]] || die "--name-prefix: lowercase letters, digits and -, at most 15 characters"
[ "$TIMEOUT" -gt "$DEADLINE" ] || die "--timeout ($TIMEOUT) must be above --deadline ($DEADLINE): at the timeout the platform stops the work mid-way"
for member in "${INVOKERS[@]+"${INVOKERS[@]}"}"; do
  case "$member" in
    allUsers | allAuthenticatedUsers) die "handle_http is private: never grant invoke to $member" ;;
  esac
done
[ ${#TARGET_PROJECTS[@]} -gt 0 ] || TARGET_PROJECTS=("$PROJECT")
if [ "$DRY_RUN" = 0 ] && ! command -v gcloud >/dev/null; then
  die "gcloud not found: install the Google Cloud CLI, or run with --dry-run to see the commands"
fi

# -- running commands -------------------------------------------------------------------------------

show() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
}

# A command that changes something: printed, and run unless --dry-run.
run() {
  show "$@"
  [ "$DRY_RUN" = 1 ] || "$@"
}

# A lookup (describe/list/get-iam-policy): printed; under --dry-run it finds nothing.
probe() {
  show "$@" >&2
  if [ "$DRY_RUN" = 1 ]; then
    return 1
  fi
  "$@" 2>/dev/null
}

note() {
  printf '# %s\n' "$1"
}

G=(gcloud --quiet)

# -- names ------------------------------------------------------------------------------------------

ALERT_FN="$PREFIX-alert" COMMAND_FN="$PREFIX-command" HTTP_FN="$PREFIX-http"
SA_CONTROLLER="$PREFIX-controller@$PROJECT.iam.gserviceaccount.com"
SA_TRIGGER="$PREFIX-trigger@$PROJECT.iam.gserviceaccount.com"
SA_SCHEDULER="$PREFIX-scheduler@$PROJECT.iam.gserviceaccount.com"
CONTROLLER="serviceAccount:$SA_CONTROLLER"
TOPIC_ALERTS="$PREFIX-alerts" TOPIC_COMMANDS="$PREFIX-commands" TOPIC_EVENTS="$PREFIX-events"

if [ "$DRY_RUN" = 1 ]; then
  NUMBER="PROJECT_NUMBER"
  show "${G[@]}" projects describe "$PROJECT" --format=value\(projectNumber\) >&2
else
  NUMBER=$("${G[@]}" projects describe "$PROJECT" --format='value(projectNumber)')
fi
HTTP_URL_FUNCTIONS="https://$REGION-$PROJECT.cloudfunctions.net/$HTTP_FN"
HTTP_URL_RUN="https://$HTTP_FN-$NUMBER.$REGION.run.app"

# -- permissions: deploy/permissions.yaml, one custom role per group ---------------------------------

# "role_id permission,permission,..." per group, read from the one list the Terraform module and
# docs/security.md use too (tests/deploy check that this reads exactly what YAML parsing reads).
role_lines() {
  awk '
    /^  - id:/ { if (role != "") print role, perms; role = ""; perms = "" }
    /^    role_id:/ { role = $2 }
    /^      - name:/ { perms = (perms == "" ? $3 : perms "," $3) }
    END { if (role != "") print role, perms }
  ' "$ROOT/deploy/permissions.yaml"
}

role_permissions() {
  role_lines | awk -v r="$1" '$1 == r { print $2 }'
}

ensure_role() { # ensure_role ROLE_ID PROJECT
  local role=$1 project=$2 wanted current
  wanted=$(role_permissions "$role")
  if current=$(probe "${G[@]}" iam roles describe "$role" --project="$project" --format='value(includedPermissions)'); then
    if [ "$(tr ';' '\n' <<<"$current" | sort | paste -sd, -)" = "$(tr ',' '\n' <<<"$wanted" | sort | paste -sd, -)" ]; then
      note "role projects/$project/roles/$role: unchanged"
      return
    fi
    run "${G[@]}" iam roles update "$role" --project="$project" --permissions="$wanted"
  else
    run "${G[@]}" iam roles create "$role" --project="$project" --title="Rollback controller ($role)" \
      --description="Generated from deploy/permissions.yaml" --permissions="$wanted" --stage=GA
  fi
}

# ensure_binding ROLE MEMBER GROUP RESOURCE [FLAGS...]: GROUP is the gcloud command group
# ("projects", "pubsub topics", "run services", ...), FLAGS are e.g. --project, --region.
ensure_binding() {
  local role=$1 member=$2 kind=$3 group resource=$4
  read -r -a group <<<"$3"
  shift 4
  if probe "${G[@]}" "${group[@]}" get-iam-policy "$resource" "$@" --flatten=bindings[].members \
    --filter="bindings.role=$role AND bindings.members=$member" --format='value(bindings.role)' | grep -q .; then
    note "$member has $role on $resource: unchanged"
    return
  fi
  # --condition=None keeps gcloud from prompting where conditional bindings exist (not offered by
  # every group: Pub/Sub topics have no conditions).
  [ "$kind" = "pubsub topics" ] || set -- "$@" --condition=None
  run "${G[@]}" "${group[@]}" add-iam-policy-binding "$resource" "$@" --role="$role" --member="$member"
}

ensure_sa() { # ensure_sa ACCOUNT_ID DISPLAY_NAME
  if probe "${G[@]}" iam service-accounts describe "$1@$PROJECT.iam.gserviceaccount.com" --project="$PROJECT" >/dev/null; then
    note "service account $1: unchanged"
  else
    run "${G[@]}" iam service-accounts create "$1" --project="$PROJECT" --display-name="$2"
  fi
}

ensure_topic() {
  if probe "${G[@]}" pubsub topics describe "$1" --project="$PROJECT" >/dev/null; then
    note "topic $1: unchanged"
  else
    run "${G[@]}" pubsub topics create "$1" --project="$PROJECT"
  fi
}

# -- 1. APIs, topics, identities ---------------------------------------------------------------------

APIS=(artifactregistry.googleapis.com cloudbuild.googleapis.com cloudfunctions.googleapis.com
  cloudscheduler.googleapis.com eventarc.googleapis.com iam.googleapis.com logging.googleapis.com
  monitoring.googleapis.com pubsub.googleapis.com run.googleapis.com secretmanager.googleapis.com
  storage.googleapis.com)
enabled=$(probe "${G[@]}" services list --enabled --project="$PROJECT" --format='value(config.name)') || enabled=""
missing=()
for api in "${APIS[@]}"; do
  grep -qxF "$api" <<<"$enabled" || missing+=("$api")
done
if [ ${#missing[@]} -gt 0 ]; then
  run "${G[@]}" services enable --project="$PROJECT" "${missing[@]}"
else
  note "APIs: all enabled"
fi

for topic in "$TOPIC_ALERTS" "$TOPIC_COMMANDS" "$TOPIC_EVENTS"; do
  ensure_topic "$topic"
done
ensure_sa "$PREFIX-controller" "Rollback controller (functions' runtime identity)"
ensure_sa "$PREFIX-trigger" "Rollback controller: Eventarc triggers"
ensure_sa "$PREFIX-scheduler" "Rollback controller: canary ticks"

# -- 2. custom roles and where they are bound ---------------------------------------------------------

role_of() { # the role_id of a group in deploy/permissions.yaml
  awk -v g="$1" '/^  - id:/ { id = $3 } /^    role_id:/ && id == g { print $2 }' "$ROOT/deploy/permissions.yaml"
}
ROLE_PROJECT=$(role_of project) ROLE_SERVICE=$(role_of service) ROLE_ACTAS=$(role_of actas)
ROLE_TOPICS=$(role_of topics) ROLE_SECRETS=$(role_of secrets)

for target in "${TARGET_PROJECTS[@]}"; do
  ensure_role "$ROLE_PROJECT" "$target"
  ensure_role "$ROLE_SERVICE" "$target"
  ensure_binding "projects/$target/roles/$ROLE_PROJECT" "$CONTROLLER" projects "$target"
  if [ ${#TARGET_SERVICES[@]} -eq 0 ]; then
    ensure_binding "projects/$target/roles/$ROLE_SERVICE" "$CONTROLLER" projects "$target"
  fi
done
for spec in "${TARGET_SERVICES[@]+"${TARGET_SERVICES[@]}"}"; do
  IFS=/ read -r sp sr ss <<<"$spec"
  ensure_binding "projects/$sp/roles/$ROLE_SERVICE" "$CONTROLLER" "run services" "$ss" --project="$sp" --region="$sr"
done
for entry in "${RUNTIME_SAS[@]}"; do
  sa_project=${entry%%:*} sa_email=${entry#*:}
  ensure_role "$ROLE_ACTAS" "$sa_project"
  ensure_binding "projects/$sa_project/roles/$ROLE_ACTAS" "$CONTROLLER" "iam service-accounts" "$sa_email" --project="$sa_project"
done
ensure_role "$ROLE_TOPICS" "$PROJECT"
for topic in "$TOPIC_COMMANDS" "$TOPIC_EVENTS"; do
  ensure_binding "projects/$PROJECT/roles/$ROLE_TOPICS" "$CONTROLLER" "pubsub topics" "$topic" --project="$PROJECT"
done
SECRETS=()
[ -z "$BOT_SECRET" ] || SECRETS+=("SLACK_BOT_TOKEN=$BOT_SECRET:latest")
[ -z "$SIGNING_SECRET" ] || SECRETS+=("SLACK_SIGNING_SECRET=$SIGNING_SECRET:latest")
if [ ${#SECRETS[@]} -gt 0 ]; then
  ensure_role "$ROLE_SECRETS" "$PROJECT"
  for secret in $BOT_SECRET $SIGNING_SECRET; do
    ensure_binding "projects/$PROJECT/roles/$ROLE_SECRETS" "$CONTROLLER" secrets "$secret" --project="$PROJECT"
  done
fi

# -- 3. Cloud Monitoring -> alerts topic ---------------------------------------------------------------

ALERTS_ID="projects/$PROJECT/topics/$TOPIC_ALERTS"
if CHANNEL=$(probe "${G[@]}" beta monitoring channels list --project="$PROJECT" \
  --filter="type=\"pubsub\" AND labels.topic=\"$ALERTS_ID\"" --format='value(name)' | head -n1) && [ -n "$CHANNEL" ]; then
  note "notification channel $CHANNEL: unchanged"
else
  run "${G[@]}" beta monitoring channels create --project="$PROJECT" --type=pubsub \
    --display-name="rollback-controller ($TOPIC_ALERTS)" --channel-labels="topic=$ALERTS_ID"
  CHANNEL=""
  if [ "$DRY_RUN" = 0 ]; then
    CHANNEL=$("${G[@]}" beta monitoring channels list --project="$PROJECT" \
      --filter="type=\"pubsub\" AND labels.topic=\"$ALERTS_ID\"" --format='value(name)' | head -n1)
  fi
  CHANNEL=${CHANNEL:-projects/$PROJECT/notificationChannels/CHANNEL_ID}
fi
ensure_binding roles/pubsub.publisher \
  "serviceAccount:service-$NUMBER@gcp-sa-monitoring-notification.iam.gserviceaccount.com" \
  "pubsub topics" "$TOPIC_ALERTS" --project="$PROJECT"

# Alert policies live in --project; other target projects join its metrics scope.
for target in "${TARGET_PROJECTS[@]}"; do
  [ "$target" != "$PROJECT" ] || continue
  if probe "${G[@]}" beta monitoring metrics-scopes list "projects/$target" --format='value(name)' |
    grep -qE "/metricsScopes/($PROJECT|$NUMBER)\$"; then
    note "$target is in $PROJECT's metrics scope: unchanged"
  else
    run "${G[@]}" beta monitoring metrics-scopes create "projects/$target" --project="$PROJECT"
  fi
done

# -- 4. the functions ----------------------------------------------------------------------------------

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/source"
cp -R "$ROOT/main.py" "$ROOT/controller" "$ROOT/policies" "$ROOT/requirements.txt" "$STAGE/source/"
find "$STAGE/source" -name __pycache__ -type d -prune -exec rm -rf {} +

join_by() {
  local IFS=$1
  shift
  printf '%s' "$*"
}
PRINCIPALS_ALL=$(join_by , "$SA_SCHEDULER" "${PRINCIPALS[@]+"${PRINCIPALS[@]}"}")

env_file() { # env_file NAME [extra KEY=VALUE...]: the function's environment as a YAML file
  local file="$STAGE/$1.env.yaml" pair
  shift
  {
    for pair in "GOOGLE_CLOUD_PROJECT=$PROJECT" "ROLLBACK_REGIONS=$REGIONS" \
      "ROLLBACK_COMMANDS_TOPIC=projects/$PROJECT/topics/$TOPIC_COMMANDS" \
      "ROLLBACK_EVENTS_TOPIC=projects/$PROJECT/topics/$TOPIC_EVENTS" \
      "ROLLBACK_DELIVERY_DEADLINE=$DEADLINE" "ROLLBACK_DRY_RUN=false" "SLACK_CHANNEL=$SLACK_CHANNEL" \
      "ROLLBACK_SLACK_ALLOWED_USERS=$SLACK_USERS" "$@"; do
      printf '%s: "%s"\n' "${pair%%=*}" "${pair#*=}"
    done
  } >"$file"
  printf '%s' "$file"
}

# deploy_function NAME ENTRY_POINT ENV_FILE TRIGGER_FLAGS...: deployed only when the source or the
# settings differ from the last deployment (a label records their hash).
deploy_function() {
  local name=$1 entry=$2 env=$3 digest current
  shift 3
  local flags=(--gen2 --project="$PROJECT" --region="$REGION" --runtime=python312 --source="$STAGE/source"
    --entry-point="$entry" --service-account="$SA_CONTROLLER" --timeout="${TIMEOUT}s" --memory="$MEMORY"
    --max-instances="$MAX_INSTANCES" --env-vars-file="$env" "$@")
  [ ${#SECRETS[@]} -eq 0 ] || flags+=(--set-secrets="$(join_by , "${SECRETS[@]}")")
  digest=$({
    (cd "$STAGE/source" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    cat "$env"
    printf '%s\n' "${flags[@]}" | grep -v -e '^--source=' -e '^--env-vars-file='
  } | sha256sum | cut -c1-40)
  if current=$(probe "${G[@]}" functions describe "$name" --project="$PROJECT" --region="$REGION" \
    --format='value(labels.rollback_config)') && [ "$current" = "$digest" ]; then
    note "function $name: unchanged"
    return
  fi
  if [ "$DRY_RUN" = 1 ]; then
    sed "s/^/#   $name env: /" "$env"
  fi
  run "${G[@]}" functions deploy "$name" "${flags[@]}" --update-labels="rollback_config=$digest"
}

deploy_function "$ALERT_FN" handle_alert "$(env_file alert)" --trigger-topic="$TOPIC_ALERTS" --retry \
  --trigger-service-account="$SA_TRIGGER" --ingress-settings=internal-only --no-allow-unauthenticated
deploy_function "$COMMAND_FN" handle_command "$(env_file command)" --trigger-topic="$TOPIC_COMMANDS" --retry \
  --trigger-service-account="$SA_TRIGGER" --ingress-settings=internal-only --no-allow-unauthenticated
# Cloud Run IAM checks the ID token and strips its signature; the function still checks every claim.
# ROLLBACK_AUTH_TRUST_PLATFORM is safe only while the function denies unauthenticated invocation.
deploy_function "$HTTP_FN" handle_http "$(env_file http \
  "ROLLBACK_AUTH_AUDIENCE=$HTTP_URL_FUNCTIONS,$HTTP_URL_RUN" \
  "ROLLBACK_ALLOWED_PRINCIPALS=$PRINCIPALS_ALL" "ROLLBACK_AUTH_TRUST_PLATFORM=true")" \
  --trigger-http --ingress-settings=all --no-allow-unauthenticated

for fn in "$ALERT_FN" "$COMMAND_FN"; do
  ensure_binding roles/run.invoker "serviceAccount:$SA_TRIGGER" "run services" "$fn" --project="$PROJECT" --region="$REGION"
done
for member in "serviceAccount:$SA_SCHEDULER" "${INVOKERS[@]+"${INVOKERS[@]}"}"; do
  ensure_binding roles/run.invoker "$member" "run services" "$HTTP_FN" --project="$PROJECT" --region="$REGION"
done

# -- 5. canary ticks -----------------------------------------------------------------------------------

if [ "$SCHEDULE" != none ]; then
  for target in "${TARGET_PROJECTS[@]}"; do
    job="$PREFIX-canary-tick-$target"
    flags=(--location="$REGION" --project="$PROJECT" --schedule="$SCHEDULE" --time-zone=Etc/UTC
      --uri="$HTTP_URL_RUN/canary/tick" --http-method=POST --headers=Content-Type=application/json
      --message-body="{\"project\": \"$target\"}" --oidc-service-account-email="$SA_SCHEDULER"
      --oidc-token-audience="$HTTP_URL_RUN" --attempt-deadline="$((TIMEOUT + 30))s" --max-retry-attempts=0)
    if current=$(probe "${G[@]}" scheduler jobs describe "$job" --location="$REGION" --project="$PROJECT" \
      --format='value(schedule,httpTarget.uri)'); then
      if [ "$current" = "$(printf '%s\t%s' "$SCHEDULE" "$HTTP_URL_RUN/canary/tick")" ]; then
        note "scheduler job $job: unchanged"
        continue
      fi
      run "${G[@]}" scheduler jobs update http "$job" "${flags[@]}"
    else
      run "${G[@]}" scheduler jobs create http "$job" "${flags[@]}"
    fi
  done
fi

# -- 6. alert policies, generated from the rollback policies ------------------------------------------

mkdir -p "$STAGE/alert-policies"
(cd "$ROOT" && "$PYTHON" -m controller alert-policies policies --channel="$CHANNEL" \
  --output-dir="$STAGE/alert-policies" >/dev/null)
: >"$STAGE/displays"
for file in "$STAGE"/alert-policies/*.json; do
  display=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["displayName"])' "$file")
  printf '%s\n' "$display" >>"$STAGE/displays"
  if existing=$(probe "${G[@]}" alpha monitoring policies list --project="$PROJECT" \
    --filter="displayName=\"$display\"" --format='value(name)' | head -n1) && [ -n "$existing" ]; then
    note "alert policy \"$display\": exists (same thresholds: its name carries them)"
  else
    run "${G[@]}" alpha monitoring policies create --project="$PROJECT" --policy-from-file="$file"
  fi
done

# A changed threshold changes the display name, so the old policy is left behind: say which.
if managed=$(probe "${G[@]}" alpha monitoring policies list --project="$PROJECT" \
  --filter='userLabels.managed_by="rollback-controller"' --format='value(name,displayName)'); then
  while IFS=$'\t' read -r name display; do
    if [ -n "$name" ] && ! grep -qxF "$display" "$STAGE/displays"; then
      note "alert policy $name (\"$display\") is no longer generated: gcloud alpha monitoring policies delete $name"
    fi
  done <<<"$managed"
fi

# -- 7. the controller's own telemetry ----------------------------------------------------------------

for file in "$ROOT"/deploy/telemetry/metrics/*.json; do
  metric=$(basename "$file" .json)
  wanted=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["filter"])' "$file")
  if current=$(probe "${G[@]}" logging metrics describe "$metric" --project="$PROJECT" --format='value(filter)'); then
    if [ "$current" = "$wanted" ]; then
      note "log metric $metric: unchanged"
      continue
    fi
    run "${G[@]}" logging metrics update "$metric" --project="$PROJECT" --config-from-file="$file"
  else
    run "${G[@]}" logging metrics create "$metric" --project="$PROJECT" --config-from-file="$file"
  fi
done
if existing=$(probe "${G[@]}" monitoring dashboards list --project="$PROJECT" \
  --filter='displayName="Rollback controller"' --format='value(name)' | head -n1) && [ -n "$existing" ]; then
  note "dashboard $existing: unchanged (delete it to re-create it from deploy/telemetry/dashboard.json)"
else
  run "${G[@]}" monitoring dashboards create --project="$PROJECT" --config-from-file="$ROOT/deploy/telemetry/dashboard.json"
fi

note "done. handle_http: $HTTP_URL_RUN (audiences: $HTTP_URL_FUNCTIONS, $HTTP_URL_RUN)"
