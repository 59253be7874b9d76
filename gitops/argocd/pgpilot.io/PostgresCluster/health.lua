-- Argo CD health of a pgpilot PostgresCluster (pgpilot.io/v1alpha1).
local function condition(t)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == t then return c end
    end
  end
  return nil
end

local hs = {}
if obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  hs.message = "reconciliation is paused by spec.paused"
  return hs
end
if obj.status == nil or obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to see generation " .. tostring(obj.metadata.generation)
  return hs
end
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
-- It served before and no primary does now: an outage, not a rollout.
if obj.status.phase == "Unavailable" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = ready ~= nil and ready.message or ("phase " .. tostring(obj.status.phase))
return hs
