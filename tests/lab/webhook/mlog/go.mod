// The lab's own stand-in for monis.app/mlog (the structured-logging wrapper the Azure Workload Identity webhook
// imports): the Go module proxy refuses that module here (403), so ../go.mod replaces it with this folder.
// Only logging goes through it; the webhook's admission logic is built unchanged from the v1.6.0 module.
module monis.app/mlog

go 1.24

require github.com/go-logr/logr v1.4.3
