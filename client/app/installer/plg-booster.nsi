; PLG Booster's Windows installer, built on Linux with Debian's makensis (installer/windows.sh):
; Tauri's own NSIS bundling needs the MSVC target (cargo-xwin and the Windows SDK, which can't be
; fetched here), so the app is cross-built for x86_64-pc-windows-gnu and packed by this script.
; Per-user install (no admin), like tauri.conf.json's "installMode": "currentUser".
;   makensis -DVERSION=0.1.0 -DSTAGE=dir/with/the/files -DOUTFILE=out.exe plg-booster.nsi
Unicode true
SetCompressor /SOLID lzma
RequestExecutionLevel user

!define NAME "PLG Booster"
!define EXE "plg-app.exe"
!define REGKEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\net.plg.booster"

Name "${NAME}"
OutFile "${OUTFILE}"
InstallDir "$LOCALAPPDATA\Programs\${NAME}"
InstallDirRegKey HKCU "Software\net.plg.booster" "InstallDir"
VIProductVersion "${VERSION}.0"
VIAddVersionKey /LANG=1033 "ProductName" "${NAME}"
VIAddVersionKey /LANG=1033 "ProductVersion" "${VERSION}"
VIAddVersionKey /LANG=1033 "FileVersion" "${VERSION}"
VIAddVersionKey /LANG=1033 "FileDescription" "${NAME} installer"
VIAddVersionKey /LANG=1033 "LegalCopyright" "Apache-2.0"

!include "MUI2.nsh"
!define MUI_ICON "${STAGE}\icon.ico"
!define MUI_UNICON "${STAGE}\icon.ico"
!define MUI_FINISHPAGE_RUN "$INSTDIR\${EXE}"
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"
!insertmacro MUI_LANGUAGE "Russian"

Function .onInit
  !insertmacro MUI_LANGDLL_DISPLAY
FunctionEnd

Section "PLG Booster" SecApp
  SectionIn RO
  ; An update (tauri-plugin-updater runs this setup) replaces a running app's files.
  nsExec::Exec 'taskkill /IM ${EXE} /F'
  SetOutPath "$INSTDIR"
  File "${STAGE}\${EXE}"
  ; wry's WebView2 loader for the GNU target (the MSVC build links it statically).
  File "${STAGE}\WebView2Loader.dll"
  ; The WinDivert capture backend's user-mode library (built from source by windivert-sys).
  File "${STAGE}\WinDivert.dll"
  !ifdef WINDIVERT_SYS
  File "${STAGE}\WinDivert64.sys"
  !endif
  WriteUninstaller "$INSTDIR\uninstall.exe"
  CreateShortcut "$SMPROGRAMS\${NAME}.lnk" "$INSTDIR\${EXE}"
  CreateShortcut "$DESKTOP\${NAME}.lnk" "$INSTDIR\${EXE}"
  WriteRegStr HKCU "Software\net.plg.booster" "InstallDir" "$INSTDIR"
  WriteRegStr HKCU "${REGKEY}" "DisplayName" "${NAME}"
  WriteRegStr HKCU "${REGKEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${REGKEY}" "Publisher" "PLG"
  WriteRegStr HKCU "${REGKEY}" "DisplayIcon" "$INSTDIR\${EXE}"
  WriteRegStr HKCU "${REGKEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKCU "${REGKEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKCU "${REGKEY}" "NoModify" 1
  WriteRegDWORD HKCU "${REGKEY}" "NoRepair" 1
SectionEnd

Section "Uninstall"
  nsExec::Exec 'taskkill /IM ${EXE} /F'
  Delete "$INSTDIR\${EXE}"
  Delete "$INSTDIR\WebView2Loader.dll"
  Delete "$INSTDIR\WinDivert.dll"
  Delete "$INSTDIR\WinDivert64.sys"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"
  Delete "$SMPROGRAMS\${NAME}.lnk"
  Delete "$DESKTOP\${NAME}.lnk"
  DeleteRegKey HKCU "${REGKEY}"
  DeleteRegKey HKCU "Software\net.plg.booster"
SectionEnd
