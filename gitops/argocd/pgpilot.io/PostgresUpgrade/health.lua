-- Argo CD health of a pgpilot PostgresUpgrade (pgpilot.io/v1alpha1).
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
local phase = obj.status.phase
local progressing = condition("Progressing")
hs.message = progressing ~= nil and progressing.message or ("phase " .. tostring(phase))
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "Aborted" then
  hs.status = "Degraded"
elseif phase == "AwaitingApproval" or phase == "Paused" then
  -- Waits for a person: spec.approved or spec.paused.
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
return hs
