-- Argo CD health of a pgpilot BackupSchedule (pgpilot.io/v1alpha1).
local function condition(t)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == t then return c end
    end
  end
  return nil
end

local hs = {}
if obj.status == nil or obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to see generation " .. tostring(obj.metadata.generation)
  return hs
end
local stalled = condition("Stalled")
local scheduled = condition("Scheduled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
elseif obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: no new backups"
elseif scheduled ~= nil and scheduled.status == "True" then
  hs.status = "Healthy"
  hs.message = scheduled.message
else
  hs.status = "Progressing"
  hs.message = scheduled ~= nil and scheduled.message or "not scheduled yet"
end
return hs
