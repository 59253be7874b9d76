-- Argo CD health of a pgpilot PostgresBackup (pgpilot.io/v1alpha1).
local hs = {}
local phase = obj.status ~= nil and obj.status.phase or nil
if phase == "Completed" then
  hs.status = "Healthy"
  hs.message = "backup " .. tostring(obj.status.backupId) .. " completed"
  if obj.status.size ~= nil then hs.message = hs.message .. ": " .. obj.status.size end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = obj.status.error or "the backup failed"
else
  hs.status = "Progressing"
  if phase == "Running" then
    hs.message = "the backup Job runs"
  elseif obj.status ~= nil and obj.status.error ~= nil then
    hs.message = obj.status.error
  else
    hs.message = "waiting to start"
  end
end
return hs
